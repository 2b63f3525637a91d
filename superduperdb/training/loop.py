"""The PyTorch training loop shared by supervised and contrastive training.

:class:`TrainLoop` knows nothing about MongoDB: it pulls batches from a
callable, calls a ``step`` that returns the batch's loss, validates every
``validation_interval`` steps (or once per epoch), keeps the parameters of the
best validation, stops early after ``no_improve_then_stop`` validations
without improvement, and reports through a :class:`Reporter` (which the
training job uses to write metrics to the job's record and to notice a
cancel).

Examples
--------
>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> w = torch.nn.Linear(1, 1)
>>> data = [(torch.tensor([[float(i)]]), torch.tensor([[2.0 * i]])) for i in range(8)]
>>> def step(batch):
...     x, y = batch
...     return torch.nn.functional.mse_loss(w(x), y)
>>> loop = TrainLoop(TrainSettings(n_epochs=60, lr=0.05), list(w.parameters()),
...                  batches=lambda epoch: data, step=step)
>>> result = loop.run()
>>> result.steps, round(w.weight.detach().item(), 1)
(480, 2.0)
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import TrainingError
from .metrics import higher_is_better

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10


@dataclass(frozen=True)
class TrainSettings:
    """Options of a PyTorch training run (the original API's trainer keyword arguments).

    Parameters
    ----------
    batch_size : int
        Examples per optimisation step.
    lr : float
        Learning rate.
    optimizer : str
        A ``torch.optim`` class name, case-insensitive (``adam``, ``sgd``, ``adamw`` ...).
    optimizer_kwargs : dict
        Extra options of the optimizer (``weight_decay``, ``momentum`` ...).
    n_epochs : int, optional
        Passes over the training data (default 10 unless ``n_iterations`` is given).
    n_iterations : int, optional
        Stop after this many steps (whichever of the two limits comes first).
    validation_interval : int, optional
        Validate every this many steps; None validates at the end of every epoch.
    no_improve_then_stop : int, optional
        Stop after this many validations without improvement of ``watch``
        (None: never stop early).
    watch : str
        What early stopping and "best" follow: ``'loss'`` (validation loss, or
        the training loss without validation data) or a metric name such as
        ``'accuracy'`` or ``'<validation set>/recall@10'``.
    seed : int, optional
        Seeds torch and the shuffling, for reproducible runs.
    chunk_size : int
        Documents read from MongoDB at a time (and shuffled together).
    keep_best : bool
        Restore the parameters of the best validation at the end.
    """

    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    optimizer_kwargs: dict = field(default_factory=dict)
    n_epochs: int | None = None
    n_iterations: int | None = None
    validation_interval: int | None = None
    no_improve_then_stop: int | None = 10
    watch: str = "loss"
    seed: int | None = 0
    chunk_size: int = 5000
    keep_best: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"{name} must be a positive integer, not {value!r}.")
        for name in ("n_epochs", "n_iterations", "validation_interval", "no_improve_then_stop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainingError(f"{name} must be a positive integer or None, not {value!r}.")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise TrainingError(f"lr must be a positive number, not {self.lr!r}.")

    @property
    def epochs(self) -> int | None:
        if self.n_epochs is None and self.n_iterations is None:
            return DEFAULT_EPOCHS
        return self.n_epochs

    def to_dict(self) -> dict:
        return asdict(self)


class Reporter:
    """Receives the loop's progress; the default does nothing.

    ``step`` and ``validation`` may raise (e.g.
    :class:`~superduperdb.errors.TrainingCancelled`) to stop the run.
    """

    def step(self, step: int, epoch: int, loss: float) -> None:
        """After every optimisation step."""

    def validation(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """After every validation."""

    def progress(self, fraction: float) -> None:
        """Fraction of the planned steps done (when known)."""


@dataclass
class LoopResult:
    steps: int
    epochs: int
    stopped_early: bool
    best: dict[str, float]
    last: dict[str, float]
    seconds: float


def make_optimizer(settings: TrainSettings, parameters: list) -> Any:
    import torch

    by_name = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)
               if isinstance(getattr(torch.optim, n), type) and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)}
    cls = by_name.get(str(settings.optimizer).lower())
    if cls is None:
        from ..errors import unknown_name

        raise TrainingError(unknown_name("optimizer", settings.optimizer, by_name,
                                         "Use a torch.optim class name such as 'adam' or 'sgd'."))
    if not parameters:
        raise TrainingError("The model has no trainable parameters.")
    return cls(parameters, lr=settings.lr, **settings.optimizer_kwargs)


class TrainLoop:
    """Run optimisation steps over batches, with validation and early stopping.

    Parameters
    ----------
    settings : TrainSettings
    parameters : list of torch parameters
        What the optimizer updates.
    batches : callable
        ``batches(epoch)`` -> an iterable of batches for that epoch.
    step : callable
        ``step(batch)`` -> the batch's loss (a scalar tensor with a graph).
    validate : callable, optional
        ``validate()`` -> ``{name: value}``; should contain ``'loss'`` or a
        name ending in ``'/loss'`` when validation data exists.
    modules : list of torch modules
        Switched to train mode for steps; their state is kept for the best validation.
    reporter : Reporter, optional
    steps_per_epoch : int, optional
        For progress fractions.
    """

    def __init__(self, settings: TrainSettings, parameters: list, *, batches: Callable[[int], Iterable[Any]],
                 step: Callable[[Any], Any], validate: Callable[[], dict[str, float]] | None = None,
                 modules: list | None = None, reporter: Reporter | None = None,
                 steps_per_epoch: int | None = None) -> None:
        self.settings = settings
        self.parameters = [p for p in parameters if getattr(p, "requires_grad", True)]
        self.batches = batches
        self.step_fn = step
        self.validate_fn = validate
        self.modules = list(modules or [])
        self.reporter = reporter or Reporter()
        self.steps_per_epoch = steps_per_epoch
        self._best_value: float | None = None
        self._best_state: list | None = None
        self._best: dict[str, float] = {}
        self._bad = 0

    # -- early stopping -----------------------------------------------------------
    def _watched(self, metrics: dict[str, float]) -> tuple[str, float] | None:
        watch = self.settings.watch
        if watch in metrics:
            return watch, metrics[watch]
        for name, value in metrics.items():
            if name.endswith("/" + watch):
                return name, value
        return None

    def _consider(self, metrics: dict[str, float]) -> bool:
        """Record a validation; True if training should stop (no improvement for too long)."""
        watched = self._watched(metrics)
        if watched is None:
            raise TrainingError(f"watch={self.settings.watch!r} is not among the validation results {sorted(metrics)}.")
        name, value = watched
        better = self._best_value is None or (
            value > self._best_value if higher_is_better(name) else value < self._best_value)
        if better and not math.isnan(value):
            self._best_value, self._best, self._bad = value, dict(metrics), 0
            if self.settings.keep_best:
                self._best_state = [copy.deepcopy(m.state_dict()) for m in self.modules]
            return False
        self._bad += 1
        patience = self.settings.no_improve_then_stop
        return patience is not None and self._bad >= patience

    def _validate(self, step: int, epoch: int, recent: list[float]) -> tuple[dict[str, float], bool]:
        metrics = dict(self.validate_fn()) if self.validate_fn is not None else {}
        if recent:  # after the validation results, so that watch='loss' finds a validation loss first
            metrics["train/loss"] = float(sum(recent) / len(recent))
        self.reporter.validation(step, epoch, metrics)
        return metrics, self._consider(metrics)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> LoopResult:
        import torch

        s = self.settings
        if s.seed is not None:
            torch.manual_seed(s.seed)
        optimizer = make_optimizer(s, self.parameters)
        start = time.perf_counter()
        step = epoch = 0
        stop = early = False
        recent: list[float] = []
        last: dict[str, float] = {}
        planned = s.n_iterations or (s.epochs * self.steps_per_epoch if s.epochs and self.steps_per_epoch else None)
        if s.n_iterations and s.epochs and self.steps_per_epoch:
            planned = min(s.n_iterations, s.epochs * self.steps_per_epoch)
        while not stop and (s.epochs is None or epoch < s.epochs):
            seen = 0
            for batch in self.batches(epoch):
                for m in self.modules:
                    m.train()
                optimizer.zero_grad()
                loss = self.step_fn(batch)
                if not torch.isfinite(loss):
                    raise TrainingError(f"The loss became {float(loss.detach())} at step {step}: lower the learning rate "
                                        f"(lr={s.lr}) or check the targets.")
                loss.backward()
                optimizer.step()
                step += 1
                seen += 1
                recent.append(float(loss.detach()))
                self.reporter.step(step, epoch, recent[-1])
                if planned:
                    self.reporter.progress(min(1.0, step / planned))
                if s.validation_interval and step % s.validation_interval == 0:
                    last, early = self._validate(step, epoch, recent)
                    recent = []
                if early or (s.n_iterations and step >= s.n_iterations):
                    stop = True
                    break
            if seen == 0:
                raise TrainingError("No training batches: the filter matched no training documents "
                                    "(documents in the 'valid' fold and in validation sets are left out).")
            epoch += 1
            if not stop and not s.validation_interval:
                last, early = self._validate(step, epoch - 1, recent)
                recent = []
                stop = early
        if recent or not last:
            last, _ = self._validate(step, max(0, epoch - 1), recent)
        if self.settings.keep_best and self._best_state is not None:
            for m, state in zip(self.modules, self._best_state):
                m.load_state_dict(state)
        for m in self.modules:
            m.eval()
        seconds = time.perf_counter() - start
        logger.info("trained %d steps (%d epochs) in %.2f s%s", step, epoch, seconds, ", stopped early" if early else "")
        return LoopResult(steps=step, epochs=epoch, stopped_early=early, best=self._best or last, last=last,
                          seconds=seconds)
