"""A TLS-terminating proxy on the loopback interface, for servers that speak only plain TCP.

The MongoDB-wire test server (CongoDB) has no TLS; put this in front of it to
test pymongo's TLS options end to end (a CA, a client certificate)::

    with TlsProxy(("127.0.0.1", 27017), server_context) as proxy:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{proxy.port}/?tls=true&tlsCAFile=ca.pem")

``server_context`` is an :class:`ssl.SSLContext` for the server side (with
``verify_mode=CERT_REQUIRED`` it demands a client certificate). The proxy runs
an asyncio event loop in a daemon thread (TLS needs one owner per connection;
asyncio's memory-BIO streams give it that). :attr:`handshakes` counts the
connections whose TLS handshake succeeded; :meth:`close` ends everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType

CHUNK = 65536


class TlsProxy:
    """Accepts TLS on 127.0.0.1:``port`` and forwards the plain bytes to ``upstream`` (host, port)."""

    def __init__(self, upstream: tuple[str, int], context: ssl.SSLContext) -> None:
        self.upstream, self.context = upstream, context
        self.handshakes = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name="tlsproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the TLS proxy did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # the handler runs only once the handshake succeeded
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                while data := await src.read(CHUNK):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
