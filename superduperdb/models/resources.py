"""Which Dask worker resources a model's jobs request (``GPU`` for a model on a CUDA device).

A model's jobs run only on workers that offer what it requests: ``superduperdb
worker --gpu`` offers ``GPU=1`` (``dask worker --resources GPU=1``). A model
requests ``GPU=1`` when it is registered with ``device='cuda...'``, when it is a
torch module whose parameters are on a CUDA device, or when ``resources=`` says
so explicitly. Nothing here needs a GPU or imports torch.

Examples
--------
>>> model_resources(len)
>>> model_resources(len, device="cuda:0")
{'GPU': 1}
>>> model_resources(len, resources={"GPU": 2, "MEM": 8e9})
{'GPU': 2, 'MEM': 8000000000.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ModelError

GPU = "GPU"


def on_cuda(obj: Any) -> bool:
    """Whether ``obj`` (a torch module, or anything with ``parameters()``) has a parameter on a CUDA device."""
    parameters = getattr(obj, "parameters", None)
    if not callable(parameters):
        return False
    try:
        for p in parameters():
            device = getattr(p, "device", None)
            if getattr(device, "type", None) == "cuda":
                return True
    except TypeError:  # a parameters() that is not torch's
        return False
    return False


def model_resources(obj: Any, device: Any = None, resources: Mapping[str, float] | None = None) -> dict | None:
    """The resources the jobs of model ``obj`` request (None: any worker).

    Raises
    ------
    ModelError
        ``resources`` is not a mapping of resource names to positive numbers.
    """
    if resources is not None:
        if not isinstance(resources, Mapping) or not resources:
            raise ModelError(f"resources must be a dict such as {{'GPU': 1}}, not {resources!r}.")
        out = {}
        for name, amount in resources.items():
            if not isinstance(name, str) or not name or isinstance(amount, bool) \
                    or not isinstance(amount, (int, float)) or amount <= 0:
                raise ModelError(f"resources must map names to positive numbers, such as {{'GPU': 1}}; "
                                 f"got {name!r}: {amount!r}.")
            out[name] = amount if isinstance(amount, int) else float(amount)
        return out
    if device is not None and str(device).startswith("cuda") or on_cuda(obj):
        return {GPU: 1}
    return None
