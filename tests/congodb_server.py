"""Run a CongoDB server (a MongoDB-wire-protocol server in TypeScript) for tests.

CongoDB ships inside the npm package ``@push.rocks/smartmongo``; ``tests/congodb/install.sh``
installs it and ``tests/congodb/server.mjs`` runs it with in-memory storage.  This module
starts that server as a subprocess on a free port of 127.0.0.1 and waits until pymongo can
talk to it::

    with CongoDB() as congo:
        client = pymongo.MongoClient(congo.uri)
        ...

or, in the foreground (for CI scripts or manual use)::

    python tests/congodb_server.py --port 27017

Only the standard library and pymongo are used.  Needs ``node`` (>= 18) and, for the first
install, ``npm`` with access to the npm registry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import pymongo
import pymongo.errors

CONGODB_DIR = Path(__file__).resolve().parent / "congodb"
INSTALL_SCRIPT = CONGODB_DIR / "install.sh"
SERVER_SCRIPT = CONGODB_DIR / "server.mjs"
# The install directory name carries the patch level; keep in sync with congodb/install.sh.
INSTALL_MARKER = CONGODB_DIR / "smartmongo" / "2.2.0-p2" / "INSTALL_OK"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_INSTALL_TIMEOUT = 600.0
_POLL_INTERVAL = 0.02
_PORT_RETRIES = 3
_LOG_TAIL_CHARS = 4000

__all__ = [
    "CongoDB",
    "ensure_installed",
    "find_free_port",
    "is_installed",
    "main",
]


def is_installed() -> bool:
    """Return True if ``install.sh`` has completed (its marker file exists)."""
    return INSTALL_MARKER.is_file()


def ensure_installed(timeout: float = DEFAULT_INSTALL_TIMEOUT) -> None:
    """Run ``tests/congodb/install.sh`` unless CongoDB is already installed.

    :param timeout: Seconds allowed for the install (it needs the npm registry).
    :raises RuntimeError: If node/npm are missing or the installer fails or times out.
    """
    if is_installed():
        return
    missing = [tool for tool in ("bash", "node", "npm") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"cannot install CongoDB: {', '.join(missing)} not found on PATH")
    # Own session, so that on timeout the whole tree (bash, npm, node) can be killed.
    proc = subprocess.Popen(
        ["bash", str(INSTALL_SCRIPT)],
        cwd=CONGODB_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise RuntimeError(f"CongoDB install timed out after {timeout:g} s") from exc
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0 or not is_installed():
        tail = output.decode("utf-8", errors="replace")[-_LOG_TAIL_CHARS:]
        raise RuntimeError(f"CongoDB install failed (exit {proc.returncode}):\n{tail}")


def find_free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class CongoDB:
    """A CongoDB server in a subprocess, reachable at :attr:`uri`.

    Usable as a context manager or through :meth:`start` / :meth:`stop`.  Storage is in
    memory, so every instance starts empty and loses its data when stopped.

    :param port: TCP port to listen on; ``None`` picks a free one (and retries on a clash).
    :param host: Address to bind to.
    :param start_timeout: Seconds to wait for the server to answer a ``ping``.
    :param install_timeout: Seconds allowed for ``install.sh`` if CongoDB is not installed.
    :param log_dir: Directory for the server log; ``None`` makes a temporary one.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = DEFAULT_HOST,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        install_timeout: float = DEFAULT_INSTALL_TIMEOUT,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.install_timeout = install_timeout
        self._requested_port = port
        self._port: int | None = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._own_log_dir: str | None = None
        self._log_path: Path | None = None
        self._log_offset = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- public properties -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (only valid while running)."""
        if self._port is None:
            raise RuntimeError("CongoDB is not running")
        return self._port

    @property
    def uri(self) -> str:
        """A MongoDB connection string for the server, e.g. ``mongodb://127.0.0.1:PORT/``."""
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (stdout and stderr), once started."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The server process id, while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> CongoDB:
        """Install if needed, start the server and wait until pymongo can ``ping`` it.

        :returns: ``self``.
        :raises RuntimeError: If it is already running, or fails to start in time (the
            message includes the tail of the server log).
        """
        with self._lock:
            if self._proc is not None:
                raise RuntimeError("CongoDB is already started")
            ensure_installed(self.install_timeout)
            if shutil.which("node") is None:
                raise RuntimeError("cannot start CongoDB: node not found on PATH")
            self._prepare_log()
            deadline = time.monotonic() + self.start_timeout
            attempts = 1 if self._requested_port is not None else _PORT_RETRIES
            for attempt in range(1, attempts + 1):
                port = self._requested_port
                if port is None:
                    port = find_free_port(self.host)
                self._spawn(port)
                try:
                    self._wait_until_ready(port, deadline)
                except _PortInUse:
                    if attempt < attempts:
                        self._kill()
                        continue
                    error = self._start_error(f"port {port} is in use")
                    self._kill()
                    self._remove_own_log_dir()
                    raise error from None
                except BaseException:
                    self._kill()
                    self._remove_own_log_dir()
                    raise
                self._port = port
                return self
            raise AssertionError("unreachable")

    def stop(self) -> None:
        """Kill the server's process group with SIGKILL and wait for it; idempotent.

        SIGKILL rather than SIGTERM: a busy CongoDB only handles signals between requests.
        """
        with self._lock:
            self._kill()
            self._port = None
            self._remove_own_log_dir()

    def client(self, **kwargs: object) -> pymongo.MongoClient[dict[str, object]]:
        """Return a new :class:`pymongo.MongoClient` for this server (caller closes it)."""
        options: dict[str, object] = {"serverSelectionTimeoutMS": 5000}
        options.update(kwargs)
        return pymongo.MongoClient(self.uri, **options)  # type: ignore[arg-type]

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """Return the last ``chars`` characters of the server log ('' if none)."""
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError:
            return ""
        return data[-chars:].decode("utf-8", errors="replace")

    def __enter__(self) -> CongoDB:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.uri if self._port is not None else "stopped"
        return f"CongoDB({where}, pid={self.pid})"

    # -- internals ---------------------------------------------------------------------

    def _prepare_log(self) -> None:
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log_dir = self._log_dir
        else:
            if self._own_log_dir is None:
                self._own_log_dir = tempfile.mkdtemp(prefix="congodb-")
            log_dir = Path(self._own_log_dir)
        self._log_path = log_dir / f"congodb-{os.getpid()}-{id(self):x}.log"

    def _spawn(self, port: int) -> None:
        assert self._log_path is not None
        command = [
            "node",
            str(SERVER_SCRIPT),
            "--port",
            str(port),
            "--host",
            self.host,
            "--exit-on-stdin-eof",
        ]
        with open(self._log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # stdin is a pipe we never write to: if this Python process dies, the pipe
            # closes and the server exits instead of lingering (--exit-on-stdin-eof).
            self._proc = subprocess.Popen(
                command,
                cwd=CONGODB_DIR,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_ready(self, port: int, deadline: float) -> None:
        """Poll (READY line in the log, then a pymongo ``ping``) until ready or past ``deadline``."""
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                if code == 2 and "EADDRINUSE" in self._log_since_spawn():
                    raise _PortInUse
                raise self._start_error(f"server exited with code {code}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(f"server did not answer a ping within {self.start_timeout:g} s")
            # READY proves that *our* process listens (a fixed port could be served by
            # another server); the ping proves that pymongo can talk to it.
            if f"READY {port}\n" in self._log_since_spawn() and _ping(
                self.host, port, timeout=min(2.0, remaining)
            ):
                return
            time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _log_since_spawn(self) -> str:
        """Return what the current server process has written to the log so far."""
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _remove_own_log_dir(self) -> None:
        if self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None
            self._log_path = None

    def _start_error(self, why: str) -> RuntimeError:
        return RuntimeError(f"CongoDB failed to start: {why}.\nLog {self._log_path}:\n{self.log_tail()}")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _kill_group(proc)
        if proc.stdin is not None:
            proc.stdin.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` (started with a new session) and reap it.

    Only while the leader is unreaped: after that its pid (= the group id) may be reused.
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass


class _PortInUse(Exception):
    """The server could not bind its port (another process took it first)."""


def _ping(host: str, port: int, timeout: float) -> bool:
    """Return True if pymongo can run ``ping`` against ``host:port`` within ``timeout``."""
    ms = max(1, int(timeout * 1000))
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        host,
        port,
        directConnection=True,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
    )
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run a CongoDB server in the foreground until SIGTERM or SIGINT.

    Prints ``READY <uri>`` on stdout once the server answers a ping.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind to")
    parser.add_argument("--start-timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds")
    parser.add_argument("--log-dir", default=None, help="directory for the server log")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = CongoDB(port=args.port, host=args.host, start_timeout=args.start_timeout, log_dir=args.log_dir)
    try:
        server.start()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        print(f"READY {server.uri}", flush=True)
        print(f"log: {server.log_path}", file=sys.stderr, flush=True)
        while not stop_requested.is_set():
            if not server.running:
                print(f"CongoDB exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return 1
            stop_requested.wait(1.0)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
