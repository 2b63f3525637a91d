"""Pure compute of training: metrics, losses, the torch loop, curves (no database, no cluster)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from superduperdb.facade import plot
from superduperdb.training import (
    TrainingCancelled,
    TrainingError,
    TrainLoop,
    TrainSettings,
    contrastive,
    loop,
    losses,
)
from superduperdb.training import metrics as M
from superduperdb.training.loop import Reporter


@pytest.mark.parametrize("module", [M, losses, contrastive, plot])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert M.accuracy(p, y) == pytest.approx(np.mean(p == y))
    assert M.f1(list(p), list(y)) == pytest.approx(f1_score(y, p, average="macro"))
    assert M.mse([[1.0, 2.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(1.25)
    assert M.get_builtin("recall@1")([[2, 1], [1, 0]], [2, 0]) == 0.5
    assert M.mrr([[2, 1], [1, 0], [5]], [1, 0, 0]) == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert M.get_builtin("nope") is None and M.is_retrieval("recall@3") and not M.is_retrieval("f1")
    with pytest.raises(TrainingError, match="2 predictions for 1 targets"):
        M.accuracy([1, 2], [1])


def test_settings_are_checked():
    with pytest.raises(TrainingError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(TrainingError, match="n_epochs"):
        TrainSettings(n_epochs=1.5)
    assert TrainSettings().epochs == loop.DEFAULT_EPOCHS and TrainSettings(n_iterations=5).epochs is None


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x = torch.randn(64, 2)
    y = x @ torch.tensor([[1.5], [-2.0]])
    data = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    return model, data, lambda b: torch.nn.functional.mse_loss(model(b[0]), b[1])


def test_loop_learns_and_stops_on_iterations():
    model, data, step = _problem()
    result = TrainLoop(TrainSettings(lr=0.05, n_iterations=300), list(model.parameters()), modules=[model],
                       batches=lambda e: data, step=step).run()
    assert result.steps == 300 and result.last["train/loss"] < 1e-3


def test_early_stopping_keeps_the_best_parameters():
    model, data, step = _problem()
    seen = []

    def validate():  # improves twice, then gets worse for ever
        seen.append(model.weight.detach().clone())
        return {"valid/loss": [3.0, 2.0, 1.0][len(seen) - 1] if len(seen) <= 3 else 5.0}

    settings = TrainSettings(lr=0.01, n_epochs=100, no_improve_then_stop=3)
    result = TrainLoop(settings, list(model.parameters()), modules=[model], batches=lambda e: data, step=step,
                       validate=validate).run()
    assert result.stopped_early and result.epochs == 6 and result.best["valid/loss"] == 1.0
    assert torch.equal(model.weight.detach(), seen[2])  # the parameters of the best validation


def test_reporter_can_stop_the_loop():
    model, data, step = _problem()

    class Cancel(Reporter):
        def step(self, step, epoch, loss):
            if step == 5:
                raise TrainingCancelled("stop", job_id="j")

    with pytest.raises(TrainingCancelled):
        TrainLoop(TrainSettings(n_epochs=10), list(model.parameters()), batches=lambda e: data, step=step,
                  reporter=Cancel()).run()


def test_no_batches_and_bad_loss_are_explained():
    model, data, step = _problem()
    with pytest.raises(TrainingError, match="No training batches"):
        TrainLoop(TrainSettings(), list(model.parameters()), batches=lambda e: [], step=step).run()
    with pytest.raises(TrainingError, match="became nan"):
        TrainLoop(TrainSettings(), list(model.parameters()), batches=lambda e: data,
                  step=lambda b: step(b) * float("nan")).run()
    with pytest.raises(TrainingError, match="Unknown optimizer 'adm'. Did you mean 'adam'"):
        TrainLoop(TrainSettings(optimizer="adm"), list(model.parameters()), batches=lambda e: data, step=step).run()


def test_contrastive_loss_prefers_aligned_pairs():
    q = torch.randn(16, 8)
    aligned = losses.ContrastiveLoss("cosine", 0.1)(q, q)
    shuffled = losses.ContrastiveLoss("cosine", 0.1)(q, q[torch.randperm(16)])
    assert aligned < shuffled
    assert losses.default_supervised_loss([np.int64(3), 1]) == "cross_entropy"


def test_plot_training_draws_every_curve():
    import matplotlib

    matplotlib.use("Agg")
    record = {"_id": "6b15138f42d807b0e872be78", "model": "clf", "models": ["clf"], "result": {"versions": {"clf": 2}},
              "metrics": [{"step": s, "epoch": 0, "loss": 1.0 / s} for s in range(1, 11)]
              + [{"step": 10, "epoch": 0, "validation": True, "valid/loss": 0.2, "valid/accuracy": 0.9}]}
    fig = plot.plot_training(record)
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert labels == {"train/loss", "valid/loss", "valid/accuracy"}
    assert fig.axes[0].get_title() == "Training 'clf' (version 2)"  # what was trained, not a job id
    with pytest.raises(KeyError, match="valid/f1"):
        plot.plot_training(record, metrics=["valid/f1"])
