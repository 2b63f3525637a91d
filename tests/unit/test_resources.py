"""Which worker resources jobs request (GPU models, the job resource) and what workers offer."""

from __future__ import annotations

import types

import pytest

from superduperdb.cluster.spec import ClusterSpec
from superduperdb.config import resolve_config
from superduperdb.errors import ModelError
from superduperdb.models.resources import model_resources, on_cuda


def module_on(device_type: str):
    """An object shaped like a torch module whose parameters are on ``device_type``."""
    param = types.SimpleNamespace(device=types.SimpleNamespace(type=device_type))
    return types.SimpleNamespace(parameters=lambda: iter([param]))


def test_cuda_models_request_a_gpu():
    assert model_resources(module_on("cuda")) == {"GPU": 1}
    assert model_resources(module_on("cpu")) is None
    assert model_resources(len, device="cuda") == {"GPU": 1}
    assert model_resources(len, device="cuda:1") == {"GPU": 1}
    assert model_resources(len, device="cpu") is None
    assert model_resources(module_on("cuda"), resources={"MEM": 4e9}) == {"MEM": 4e9}  # explicit wins
    assert not on_cuda(types.SimpleNamespace(parameters=None))


def test_a_real_torch_module_on_the_cpu_requests_nothing():
    torch = pytest.importorskip("torch")
    assert model_resources(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("bad", [{}, {"GPU": 0}, {"GPU": -1}, {"": 1}, {"GPU": True}, {"GPU": "1"}, ["GPU"]])
def test_bad_resources_are_refused(bad):
    with pytest.raises(ModelError, match="resources"):
        model_resources(len, resources=bad)
    assert issubclass(ModelError, ValueError)


def spec(**config) -> ClusterSpec:
    cfg = resolve_config(config, home="/nonexistent", cwd="/nonexistent", environ={})
    return ClusterSpec.from_config(cfg, dashboard_address=None)


def resources_of(command: list[str]) -> str | None:
    return command[command.index("--resources") + 1] if "--resources" in command else None


def test_worker_commands_offer_gpu_and_the_job_resource():
    plain = spec()
    assert resources_of(plain.worker_command()) is None
    assert resources_of(plain.worker_command(gpu=1)) == "GPU=1"
    assert resources_of(plain.worker_command(master=True, gpu=2)) == "MASTER=1 GPU=2"
    jobs = spec(cluster={"job_resource": "JOBS", "threads_per_worker": 4})
    assert resources_of(jobs.worker_command()) == "JOBS=4"
    assert resources_of(jobs.worker_command(gpu=1)) == "JOBS=4 GPU=1"
    assert resources_of(jobs.worker_command(master=True)) == "MASTER=1"  # the master worker takes no jobs
