"""A whole cluster on one machine: scheduler, job workers and master worker as subprocesses.

:class:`ProcessCluster` runs the very command lines a real deployment runs
(``dask scheduler`` / ``dask worker`` with the superduperdb preload, see
:mod:`superduperdb.cluster.spec`), each as a child process in its own process
group. Why processes started through the Dask CLIs rather than an in-process
``SpecCluster`` of nannies:

* what is tested on a laptop is exactly what runs under supervisord or on
  several machines (same preload, same options, same logs);
* the scheduler does not live inside the launcher, so a client that
  misbehaves cannot stall the launcher's event loop, and the launcher can
  stop and report on each component independently;
* each component is a process group: stopping it (SIGTERM to its leader, so
  Dask closes gracefully; SIGKILL to the whole group after a deadline) takes
  its worker processes and multiprocessing helpers with it. Children are
  started with ``PR_SET_PDEATHSIG`` on Linux, so even a SIGKILLed launcher
  leaves no cluster behind.

Example::

    with ProcessCluster(ClusterSpec(port=0, n_workers=2)) as cluster:
        client = superduperdb.connect("mongodb://localhost:27017/", cluster=cluster.address)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ClusterError
from .spec import ClusterSpec

logger = logging.getLogger(__name__)

POLL = 0.05


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGTERM to this child when its parent (the launcher) dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still running (zombies count as gone)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


@dataclass
class Component:
    """One started command: the scheduler, the job workers, or the master worker."""

    name: str
    command: list[str]
    process: subprocess.Popen
    log_path: Path | None = None
    log_file: IO | None = field(default=None, repr=False)
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the leader only: the Dask CLI then closes its nannies and workers itself."""
        self.expected_exit = True
        with contextlib.suppress(ProcessLookupError):
            if self.running():
                self.process.send_signal(signal.SIGTERM)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def close_log(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


class ProcessCluster:
    """A scheduler, ``n_workers`` job workers and one master worker, as subprocesses.

    Parameters
    ----------
    spec : ClusterSpec
        Addresses, worker counts, the master's resource.
    log_dir : path, optional
        Each component writes ``<log_dir>/<name>.log``; default: the children
        write to this process's stderr.
    env : dict, optional
        Extra environment variables for every component.
    master : bool
        Start the master worker (resource ``MASTER=1``).
    """

    def __init__(self, spec: ClusterSpec, *, log_dir: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, master: bool = True) -> None:
        self.spec = spec
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.master = master
        self.components: list[Component] = []
        self.address: str | None = None
        self.dashboard_link: str | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="superduperdb-cluster-")
        self._stopped = False

    # -- starting ------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str]) -> Component:
        log_file = log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = log_file if log_file is not None else sys.stderr
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=self.env, start_new_session=True,
                                   preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)
        component = Component(name, command, process, log_path, log_file)
        self.components.append(component)
        logger.info("started %s (pid %d): %s", name, process.pid, " ".join(command))
        return component

    def _fail(self, message: str) -> ClusterError:
        self.stop()
        return ClusterError(message, address=self.address)

    def _tail(self, component: Component, lines: int = 12) -> str:
        """The errors in ``component``'s log and its last lines (when it logs to a file)."""
        if component.log_path is None or not component.log_path.exists():
            return " (see its output above)"
        text = component.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in text if re.match(r"^[\w.]+(Error|Exception): ", line)]
        cause = f"\n{errors[0]}" if errors else ""
        return f"{cause}\n--- last lines of {component.log_path} ---\n" + "\n".join(text[-lines:])

    def start(self, timeout: float = 60.0) -> ProcessCluster:
        """Start everything and wait (up to ``timeout`` s) until every worker has registered."""
        deadline = time.monotonic() + timeout
        scheduler_file = os.path.join(self._tmp.name, "scheduler.json")
        scheduler = self._spawn("scheduler", self.spec.scheduler_command(scheduler_file=scheduler_file))
        # Workers start at once: they wait for the scheduler file (saves a Python start-up or two).
        expected = 0
        if self.spec.n_workers:
            # Dask names them worker-0, worker-1...; it adds no suffix to a single one.
            name = "worker" if self.spec.n_workers > 1 else "worker-0"
            self._spawn("workers", self.spec.worker_command(name=name, nworkers=self.spec.n_workers,
                                                            scheduler_file=scheduler_file,
                                                            extra=["--death-timeout", "60"]))
            expected += self.spec.n_workers
        if self.master:  # one master worker per shard (master.shards)
            self._spawn("master", self.spec.worker_command(master=True, scheduler_file=scheduler_file,
                                                           nworkers=self.spec.shards,
                                                           extra=["--death-timeout", "60"]))
            expected += self.spec.shards
        info = self._wait_scheduler_file(scheduler, scheduler_file, deadline)
        self.address = info["address"]
        dashboard = (info.get("services") or {}).get("dashboard")
        if dashboard and "--dashboard" in scheduler.command:
            host = self.address.split("://", 1)[1].rsplit(":", 1)[0]
            self.dashboard_link = f"http://{host}:{dashboard}/status"
        self._wait_workers(expected, deadline)
        return self

    def _wait_scheduler_file(self, scheduler: Component, path: str, deadline: float) -> dict:
        while time.monotonic() < deadline:
            if not scheduler.running():
                raise self._fail(f"The scheduler exited with code {scheduler.process.returncode} before it started "
                                 f"(is port {self.spec.port} in use?).{self._tail(scheduler)}")
            with contextlib.suppress(OSError, ValueError):
                with open(path) as f:
                    info = json.load(f)
                if info.get("address"):
                    return info
            time.sleep(POLL)
        raise self._fail(f"The scheduler did not start in time.{self._tail(scheduler)}")

    def _wait_workers(self, n: int, deadline: float) -> None:
        if n == 0:
            return
        import distributed

        from .security import security_of

        remaining = max(deadline - time.monotonic(), 1.0)
        security = security_of(self.spec.tls) if self.spec.tls else None
        with distributed.Client(self.address, timeout=remaining, set_as_default=False, security=security) as client:
            while True:
                count = len(client.scheduler_info(n_workers=-1)["workers"])
                if count >= n:
                    return
                dead = [c for c in self.components if not c.running()]
                if dead:
                    raise self._fail(f"{dead[0].name} exited with code {dead[0].process.returncode} while starting."
                                     f"{self._tail(dead[0])}")
                if time.monotonic() > deadline:
                    raise self._fail(f"Only {count} of {n} workers registered in time."
                                     + "".join(self._tail(c) for c in self.components[1:]))
                time.sleep(POLL * 4)

    # -- running -----------------------------------------------------------------------------
    def exited(self) -> list[Component]:
        """Components that exited although nobody asked them to."""
        return [c for c in self.components if not c.expected_exit and not c.running()]

    def run(self, stop_event: threading.Event | None = None) -> int:
        """Block until SIGINT/SIGTERM/SIGHUP (or ``stop_event``), then stop; return an exit code.

        Exits early, with 1, if the scheduler exits on its own. A second
        signal skips the graceful shutdown.
        """
        stop_event = stop_event or threading.Event()
        signals: list[int] = []

        def on_signal(signum: int, frame: Any) -> None:
            signals.append(signum)
            if len(signals) > 1:
                for c in self.components:
                    c.kill_group()
            stop_event.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = 0
        reported: set[str] = set()
        try:
            while not stop_event.wait(0.5):
                for c in self.exited():
                    if c.name in reported:
                        continue
                    reported.add(c.name)
                    logger.warning("%s exited with code %s", c.name, c.process.returncode)
                    if c.name == "scheduler":
                        code = 1
                        stop_event.set()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    # -- stopping ----------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Stop workers, then the scheduler; SIGKILL what is left after ``timeout`` s. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        workers = [c for c in self.components if c.name != "scheduler"]
        schedulers = [c for c in self.components if c.name == "scheduler"]
        for group in (workers, schedulers):
            deadline = time.monotonic() + timeout / 2
            for c in group:
                c.terminate()
            for c in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.process.wait(max(deadline - time.monotonic(), 0.1))
                if c.running():
                    logger.warning("%s (pid %d) did not stop in time; killing it", c.name, c.pid)
        # Leaders are reaped; anything left in their groups (a stuck worker process) is killed.
        for c in self.components:
            c.kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.process.wait(5)
            c.close_log()
        deadline = time.monotonic() + 10
        while any(group_alive(c.pid) for c in self.components) and time.monotonic() < deadline:
            time.sleep(POLL)
        self._tmp.cleanup()

    def restart_scheduler(self, timeout: float = 60.0) -> ProcessCluster:
        """Kill the scheduler, and start it again at the same address with the workers it takes down.

        Dask workers stop when their scheduler goes away (so do their actors: the master's shards);
        a supervisor then starts everything again. Clients reconnect to the same address (the
        spec's port must be fixed, not 0). Used to test what survives a scheduler restart.
        """
        if self.spec.port == 0:
            raise ClusterError("restart_scheduler() needs a fixed scheduler port (the clients reconnect to it).")
        scheduler = next(c for c in self.components if c.name == "scheduler")
        scheduler.kill_group()
        deadline = time.monotonic() + timeout
        for c in self.components:
            c.expected_exit = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.process.wait(max(deadline - time.monotonic(), 0.1))
            c.kill_group()
            c.close_log()
        self.components = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._tmp.name, "scheduler.json"))
        return self.start(max(deadline - time.monotonic(), 10.0))

    def __enter__(self) -> ProcessCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else (self.address or "not started")
        return f"ProcessCluster({state}, {self.spec.n_workers} workers, master={self.master})"
