"""Training losses (PyTorch): built-ins and the calling convention for user losses.

A loss is called as ``loss(outputs, targets) -> scalar tensor``:

* supervised models: ``outputs`` is the module's ``forward`` on a batch and
  ``targets`` the collated targets;
* semantic indexes: ``outputs`` are the query encoder's vectors and
  ``targets`` the target encoder's vectors for the same batch of pairs (row
  ``i`` of one matches row ``i`` of the other); the other rows of the batch
  are the negatives.

Built-ins, by name: ``cross_entropy`` (class ids as targets), ``mse``, and
``contrastive`` (InfoNCE over the batch, with the index's measure; a
:class:`ContrastiveLoss` with another temperature can be registered with
``create_loss``).

torch is imported only when a loss is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import TrainingError

BUILTIN_LOSSES = ("cross_entropy", "mse", "contrastive")


class ContrastiveLoss:
    """InfoNCE: each query must score its own target above the batch's other targets.

    Parameters
    ----------
    measure : {'cosine', 'dot', 'l2'}
        How queries and targets are compared (the semantic index's measure).
    temperature : float
        Scores are divided by it before the softmax (cosine similarities are in
        [-1, 1], so a small temperature such as 0.05 sharpens them).
    symmetric : bool
        Also score each target against the batch's queries.

    Examples
    --------
    >>> import torch
    >>> q = torch.eye(3)
    >>> round(float(ContrastiveLoss(temperature=0.1)(q, q)), 4)
    0.0001
    """

    def __init__(self, measure: str = "cosine", temperature: float = 0.05, symmetric: bool = True) -> None:
        self.measure = measure
        self.temperature = temperature
        self.symmetric = symmetric

    def scores(self, queries: Any, targets: Any) -> Any:
        import torch

        if self.measure == "cosine":
            queries = torch.nn.functional.normalize(queries, dim=-1)
            targets = torch.nn.functional.normalize(targets, dim=-1)
        if self.measure == "l2":
            return -torch.cdist(queries, targets)
        return queries @ targets.T

    def __call__(self, queries: Any, targets: Any) -> Any:
        import torch

        logits = self.scores(queries, targets) / self.temperature
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if self.symmetric:
            loss = (loss + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        return loss

    def __repr__(self) -> str:
        return f"ContrastiveLoss(measure={self.measure!r}, temperature={self.temperature})"


def _cross_entropy(outputs: Any, targets: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(outputs, targets.long())


def _mse(outputs: Any, targets: Any) -> Any:
    import torch

    targets = targets.to(outputs.dtype)
    if targets.numel() == outputs.numel():
        targets = targets.reshape(outputs.shape)
    return torch.nn.functional.mse_loss(outputs, targets)


def get_builtin(name: str, measure: str = "cosine") -> Callable[[Any, Any], Any] | None:
    """The built-in loss called ``name`` (None if there is none)."""
    if name == "contrastive":
        return ContrastiveLoss(measure)
    return {"cross_entropy": _cross_entropy, "mse": _mse}.get(name)


def default_supervised_loss(targets: list[Any]) -> str:
    """``cross_entropy`` when every target is an integer class id, else ``mse``.

    >>> default_supervised_loss([0, 3, 1]), default_supervised_loss([0.5, 1.0])
    ('cross_entropy', 'mse')
    """
    import numbers

    def is_int(t: Any) -> bool:
        if hasattr(t, "dtype") and getattr(t, "ndim", 1) == 0:
            return "int" in str(t.dtype)
        return isinstance(t, numbers.Integral) and not isinstance(t, bool)

    if not targets:
        raise TrainingError("No training targets: cannot choose a loss.")
    return "cross_entropy" if all(is_int(t) for t in targets) else "mse"
