"""A TCP proxy on the loopback interface that tests can cut and restore.

Put it between a program and a server to simulate the server going away::

    with TcpProxy(("127.0.0.1", 27017)) as proxy:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{proxy.port}/")
        proxy.cut()      # every open connection is closed; new ones are accepted and closed at once
        ...
        proxy.restore()  # new connections reach the server again
        proxy.hold()     # connections stay open but nothing is forwarded: a server that stalls
        proxy.release()

While cut, :attr:`refused` counts the connections that were accepted and
closed at once (the program trying to reconnect). Threads and sockets only;
everything is bounded: at most ``max_connections`` open connections, every
thread a daemon, :meth:`close` ends them all.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

ACCEPT_TICK = 0.1  # seconds: how often the accepting thread looks at the closing flag
CHUNK = 65536


class TcpProxy:
    """Forwards connections to 127.0.0.1:``port`` to ``upstream`` (host, port).

    Parameters
    ----------
    upstream : (str, int)
        Where to forward to.
    max_connections : int
        Connections beyond this many open ones are closed at once (and counted in :attr:`dropped`).
    """

    def __init__(self, upstream: tuple[str, int], max_connections: int = 256) -> None:
        self.upstream = upstream
        self.max_connections = max_connections
        self.accepted = 0  # connections forwarded
        self.refused = 0  # connections accepted and closed at once because the proxy was cut
        self.dropped = 0  # connections closed at once for other reasons (limit, upstream down, closing)
        self._cut = False
        self._flowing = threading.Event()
        self._flowing.set()
        self.held = 0  # chunks received and not forwarded while held
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[int, tuple[socket.socket, socket.socket]] = {}
        self._next = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(ACCEPT_TICK)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcpproxy-accept", daemon=True)
        self._acceptor.start()

    # -- control ----------------------------------------------------------------------
    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def cut(self) -> None:
        """Close every open connection; from now on accept new ones and close them at once."""
        with self._lock:
            self._cut = True
            pairs = list(self._open.values())
            self._open.clear()
        for pair in pairs:
            _close(*pair)

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def hold(self) -> None:
        """Stall: keep every connection open, but forward nothing (in either direction) until :meth:`release`."""
        self._flowing.clear()

    def release(self) -> None:
        """Forward again what was held, and what comes next."""
        self._flowing.set()

    def close(self) -> None:
        """Stop accepting, close every connection, end the threads."""
        self._closing.set()
        self._flowing.set()
        self.cut()
        self._acceptor.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                cut, full = self._cut, len(self._open) >= self.max_connections
                if cut:
                    self.refused += 1
            if cut or full or self._closing.is_set():
                if not cut:
                    self.dropped += 1
                _close(conn)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                self.dropped += 1
                _close(conn)
                continue
            with self._lock:
                if self._cut:  # cut while the upstream connection was being made
                    self.refused += 1
                    registered = None
                else:
                    registered = self._next
                    self._next += 1
                    self._open[registered] = (conn, up)
                    self.accepted += 1
            if registered is None:
                _close(conn, up)
                continue
            for src, dst in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(registered, src, dst), name="tcpproxy-pump",
                                 daemon=True).start()

    def _pump(self, ident: int, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():
                    with self._lock:
                        self.held += 1
                    while not self._flowing.wait(ACCEPT_TICK) and not self._closing.is_set():
                        pass
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            pair = self._open.pop(ident, None)
        _close(*(pair or (src, dst)))


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
