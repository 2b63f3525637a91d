"""Training curves of a ``train`` job, drawn with matplotlib (imported only when drawing).

The job's record holds ``metrics``: entries ``{step, epoch, loss}`` written
during training and ``{step, epoch, validation: True, '<set>/<metric>': value}``
at every validation. :func:`plot_training` draws the training loss and the
validation losses on one axis and the other validation metrics on a second.

Examples
--------
>>> record = {"_id": "j1", "metrics": [
...     {"step": 1, "epoch": 0, "loss": 2.0}, {"step": 2, "epoch": 0, "loss": 1.0},
...     {"step": 2, "epoch": 0, "validation": True, "valid/loss": 1.2, "valid/accuracy": 0.7}]}
>>> curves(record)["valid/accuracy"]
([2], [0.7])
>>> fig = plot_training(record)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

SKIP = ("step", "epoch", "validation")


def _record(job: Any) -> dict:
    if isinstance(job, dict):
        return job
    if hasattr(job, "record"):
        return job.record()
    raise TypeError(f"plot_training takes a Job or a job record, not a {type(job).__name__}.")


def curves(job: Any) -> dict[str, tuple[list[int], list[float]]]:
    """``{name: (steps, values)}`` from a training job (or its record): ``loss`` and every validation value."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in _record(job).get("metrics") or []:
        for name, value in entry.items():
            if name in SKIP or value is None or (name == "loss" and entry.get("validation")):
                continue
            steps, values = out.setdefault(name, ([], []))
            steps.append(int(entry["step"]))
            values.append(float(value))
    return out


def training_title(record: dict) -> str:
    """A plot title that names what was trained: ``"Training 'clf' (version 2)"``.

    >>> training_title({"_id": "6b15", "models": ["clf"], "result": {"versions": {"clf": 2}}})
    "Training 'clf' (version 2)"
    >>> training_title({"_id": "6b15", "model": "enc", "models": ["enc", "head"]})
    "Training 'enc', 'head'"
    """
    models = record.get("models") or ([record["model"]] if record.get("model") else [])
    versions = (record.get("result") or {}).get("versions") or {}
    if not models:
        return "Training"
    names = ", ".join(repr(m) for m in models)
    if len(models) == 1 and models[0] in versions:
        return f"Training {names} (version {versions[models[0]]})"
    return f"Training {names}"


def plot_training(job: Any, metrics: list[str] | None = None, ax: Any = None) -> Any:
    """Draw a training job's curves; return the matplotlib ``Figure``.

    Parameters
    ----------
    job : Job or dict
        The training job (``jobs[0]`` of ``create_imputation``), or its record.
    metrics : list of str, optional
        Which curves (default: all). Names as in the record, e.g.
        ``'loss'`` (training), ``'valid/loss'``, ``'valid/accuracy'``.
    ax : matplotlib Axes, optional
        Draw into this axis (losses) instead of a new figure.
    """
    import matplotlib

    if ax is None and "ipykernel" not in __import__("sys").modules:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    record = _record(job)
    data = curves(record)
    if metrics is not None:
        unknown = [m for m in metrics if m not in data]
        if unknown:
            raise KeyError(f"No curve named {unknown[0]!r}; the job has {sorted(data)}.")
        data = {k: v for k, v in data.items() if k in metrics}
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    losses = {k: v for k, v in data.items() if k == "loss" or k.endswith("/loss")}
    others = {k: v for k, v in data.items() if k not in losses}
    for name, (steps, values) in losses.items():
        ax.plot(steps, values, label="train/loss" if name == "loss" else name,
                marker=None if name == "loss" else "o", alpha=0.6 if name == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if others:
        ax2 = ax.twinx()
        for name, (steps, values) in others.items():
            ax2.plot(steps, values, label=name, marker="s", linestyle="--")
        ax2.set_ylabel("metric")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="best")
    ax.set_title(training_title(record))
    fig.tight_layout()
    return fig
