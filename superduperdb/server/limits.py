"""The model server's defences, as plain ASGI pieces: body limits, a failed-login limit, security headers.

:class:`BodyLimit`
    refuses a request whose ``Content-Length`` is above ``max_body_bytes``
    (413) before reading any of its body, counts the bytes of a body without
    one (chunked) and stops at the limit (413), and gives the whole body
    ``body_timeout`` seconds to arrive (408): a client that announces 50 MB
    and sends 12 bytes does not hold a connection open.
:class:`LoginLimiter`
    counts wrong credentials per client address in a sliding window; past
    ``max_failures`` the address is answered 429 with ``Retry-After`` (before
    its credentials are even compared) until the oldest failure leaves the
    window. Memory is bounded: at most ``max_clients`` addresses are tracked
    (the least recently failed are forgotten first).
:class:`SecurityHeaders`
    adds ``X-Content-Type-Options``, ``Cache-Control: no-store``,
    ``X-Frame-Options``, a ``Content-Security-Policy`` that allows nothing,
    ``Referrer-Policy`` and, over HTTPS, ``Strict-Transport-Security`` to
    every response, errors included.

Examples
--------
>>> limiter = LoginLimiter(max_failures=2, window=60.0)
>>> limiter.retry_after("10.0.0.1", now=0.0) is None
True
>>> limiter.failed("10.0.0.1", now=0.0), limiter.failed("10.0.0.1", now=1.0)
(1, 2)
>>> limiter.retry_after("10.0.0.1", now=2.0), limiter.retry_after("10.0.0.2", now=2.0)
(58, None)
>>> limiter.retry_after("10.0.0.1", now=61.0) is None
True
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Any


class BodyTooLarge(Exception):
    """The body is (or would be) above the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class BodyTimeout(Exception):
    """The body did not arrive in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def send_json(send: Any, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON response through the raw ASGI ``send``."""
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of body per request, arriving within ``timeout`` seconds."""

    def __init__(self, app: Any, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await send_json(send, 400, {"error": "BadRequest", "message": "Content-Length must be a number."})
                return
            if int(length) > self.max_bytes:
                await send_json(send, 413, _too_large(self.max_bytes))
                return
        received = 0
        deadline: float | None = None

        async def limited() -> dict:
            nonlocal received, deadline
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTimeout(self.timeout) from None
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if not message.get("more_body"):
                    deadline = math.inf  # the body is complete: later receives wait for a disconnect
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> dict:
    return {"error": "PayloadTooLarge",
            "message": f"The request body is larger than {limit} bytes (serve.max_body_bytes): send fewer inputs "
                       "per request."}


def too_large_payload(exc: BodyTooLarge) -> dict:
    return _too_large(exc.limit)


class LoginLimiter:
    """Wrong credentials per client address in a sliding window (thread-safe, bounded memory).

    Parameters
    ----------
    max_failures : int
        Failures allowed in ``window`` seconds; one more and the address waits.
    window : float
        Seconds a failure counts for.
    max_clients : int
        Addresses tracked at most.
    """

    def __init__(self, max_failures: int, window: float, max_clients: int = 10_000) -> None:
        self.max_failures, self.window, self.max_clients = max_failures, window, max_clients
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str, now: float | None = None) -> int | None:
        """Seconds ``address`` must wait before trying again (None: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(address, now)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[-self.max_failures] + self.window - now))

    def failed(self, address: str, now: float | None = None) -> int:
        """Record a failure of ``address``; return how many it has in the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(address, now) or deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            return len(times)

    def succeeded(self, address: str) -> None:
        """Forget the failures of ``address`` (it knew the password)."""
        with self._lock:
            self._failures.pop(address, None)


HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}
HSTS = ("strict-transport-security", "max-age=31536000")


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` (and HSTS over HTTPS) to every response."""

    def __init__(self, app: Any, https: bool) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        if https:
            self.headers.append((HSTS[0].encode(), HSTS[1].encode()))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in self.headers if k not in present]]}
            await send(message)

        await self.app(scope, receive, with_headers)
