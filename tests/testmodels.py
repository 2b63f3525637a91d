"""Models used by the tests, importable by worker processes (tests/ is on their sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def norm(x) -> float:
    return float(np.linalg.norm(np.asarray(x)))


def shout(text: str) -> str:
    print(f"shouting {text!r}")  # captured into the job's logs
    return text.upper()


def fail(x):
    raise ValueError(f"cannot handle {x!r}")


class DieOnce:
    """Kills its worker process the first time it runs (a marker file remembers), then works."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, x):
        if not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return float(x) * 10


class Gate:
    """Blocks until a file exists (with a deadline), so tests can hold a job running."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def __call__(self, x):
        import time

        deadline = time.monotonic() + self.timeout
        while not Path(self.path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {self.path} never opened")
            time.sleep(0.01)
        return x


def make_torch_mlp():
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.layer = torch.nn.Linear(4, 3)

        def preprocess(self, x):
            return torch.as_tensor(np.asarray(x), dtype=torch.float32)

        def forward(self, batch):
            return torch.relu(self.layer(batch))

    return MLP()


def identity(x):
    return np.asarray(x, dtype="float32")


def letter_counts(text: str):
    """A tiny text 'embedding' (counts of a-z, plus one so no vector is zero), for a stand-in of MiniLM."""
    counts = np.ones(26, dtype="float32")
    for ch in str(text).lower():
        if "a" <= ch <= "z":
            counts[ord(ch) - 97] += 1
    return counts


def first_two(x):
    """A 'query encoder' that maps a 2-element list into the same space as ``identity``."""
    return np.asarray(list(x) + [0.0] * 6, dtype="float32")


def three_d(x):
    return np.zeros(3, dtype="float32")


async def exit_process() -> None:
    """For ``dask_client.run(exit_process, workers=[...], wait=False)``: kill that worker process."""
    os._exit(1)


def slow_identity(x, seconds: float = 1.5):
    """Takes a while (a long job, for progress bars)."""
    import time

    time.sleep(seconds)
    return x


class CountCalls:
    """Appends one line per call to a file, so tests can count model calls across worker processes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, x):
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")
        return float(x) * 2


def count_calls(path) -> int:
    """How many calls a :class:`CountCalls` model made (0 before the first)."""
    try:
        return len(Path(path).read_text().splitlines())
    except FileNotFoundError:
        return 0


class Sleepy:
    """Sleeps ``seconds`` per input, then returns it as a float (a slowish model)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, x):
        import time

        time.sleep(self.seconds)
        return float(x)


def held_actors(dask_worker, prefix: str = "superduperdb-master-") -> list:
    """For ``dask_client.run``: the keys of the actors (masters) this worker holds."""
    return sorted(str(k) for k in dask_worker.state.actors if str(k).startswith(prefix))


def shard_owners(dask_worker) -> list:
    """For ``dask_client.run``: ``(shard, key, retired)`` of each master shard actor this worker holds."""
    out = []
    for key, actor in list(dask_worker.state.actors.items()):
        if type(actor).__name__ == "Master":
            info = actor.info()
            out.append((info["shard"], str(key), info["retired"]))
    return out


def starting_masters(dask_scheduler) -> list:
    """For ``dask_client.run_on_scheduler``: the workers on which a master shard actor is being created now."""
    return [ts.processing_on.address for key, ts in list(dask_scheduler.tasks.items())
            if str(key).startswith("superduperdb-master-") and ts.state == "processing" and ts.processing_on is not None]


def known_tasks(dask_scheduler, keys: list) -> list:
    """For ``dask_client.run_on_scheduler``: which of ``keys`` the scheduler still knows."""
    return [k for k in keys if k in dask_scheduler.tasks]


def worker_ids(dask_scheduler) -> dict:
    """For ``dask_client.run_on_scheduler``: ``{address: server id}`` of the workers (a restarted
    worker has a new id, even at an address it held before)."""
    return {address: ws.server_id for address, ws in dask_scheduler.workers.items()}


def exits(x):
    """Calls ``sys.exit`` (user code that 'quits'): its job must fail, the worker must live."""
    import sys

    sys.exit(f"exiting on {x!r}")


def interrupts(x):
    """Raises ``KeyboardInterrupt`` as if Ctrl-C arrived while the model ran."""
    raise KeyboardInterrupt(f"interrupted on {x!r}")


class Ouch(BaseException):
    """A ``BaseException`` that is neither ``SystemExit`` nor ``KeyboardInterrupt``."""


def ouch(x):
    raise Ouch(f"ouch on {x!r}")



def increment(x):
    return x + 1


def square(x):
    return x * x


def negate(x):
    return -x


def halve(x):
    return x / 2


class Projection:
    """A fixed random linear map ``x @ W`` (``d_in -> d_out``): a stand-in for a layer of an encoder chain."""

    def __init__(self, d_in: int, d_out: int, seed: int = 0) -> None:
        self.W = np.random.default_rng(seed).normal(size=(d_in, d_out)).astype("float32")

    def __call__(self, x):
        return np.asarray(x, dtype="float32") @ self.W


def neg_l1(Q, X):
    """A custom measure: negative L1 (Manhattan) distance, higher is more similar."""
    return -np.abs(Q[:, None, :] - X[None, :, :]).sum(-1)


class Shift:
    """Adds a constant read from a file each call (a model whose output changes without a new version)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, x):
        return float(x) + float(Path(self.path).read_text())


def task_states(dask_scheduler, keys: list) -> dict:
    """For ``dask_client.run_on_scheduler``: ``{key: (state, resource restrictions)}`` of ``keys``."""
    out = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is not None:
            out[key] = (ts.state, dict(ts.resource_restrictions or {}))
    return out


class Ballast:
    """A model that carries ``size`` incompressible bytes (as big as a real one: MiniLM is 91 MB
    stored) and answers with their SHA-256, so a test can tell that a worker loaded all of them."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.payload = np.random.default_rng(seed).bytes(size)

    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.payload).hexdigest()

    def __call__(self, x):
        return f"{x}:{self.digest()}"


class Towers:
    """Two methods that attribute models ('towers.text', 'towers.size') name: plain Python, no torch."""

    def __call__(self, x):
        return len(x)

    def text(self, batch):
        return [len(s) for s in batch]

    def size(self, batch):
        return [-len(s) for s in batch]


def which_worker(x) -> str:
    """Where the model ran: ``'gpu'`` on a worker whose environment says so (see test_gpu_workers), else ``'other'``."""
    return "gpu" if os.environ.get("SUPERDUPERDB_TEST_GPU_WORKER") else "other"
