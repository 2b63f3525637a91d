"""The model server's HTTP application (Starlette): apply registered models to posted inputs.

Endpoints (JSON in and out):

``POST /apply_model``
    ``{"database": ..., "collection": ..., "model": ..., "inputs": [...]}``
    → ``{"outputs": [...]}``, one output per input. ``"key": "x"`` reads the
    field ``x`` of each input document instead (as ``Collection.apply_model``;
    the inputs must then be documents). Outputs are made JSON: arrays and
    tensors become nested lists, numpy scalars numbers, bytes base64 strings.
``GET /models/{database}/{collection}``
    → ``{"models": [...]}``.
``GET /health``
    → ``{"status": "ok"}`` (the only endpoint without authentication; it never
    touches the database, so it answers while the database stalls).
``GET /metrics``
    → this process's Prometheus metrics in the text format, among them
    ``superduperdb_server_requests_total{endpoint, code}`` and
    ``superduperdb_server_request_duration_seconds{endpoint}``
    (``docs/operations.md``); scrape it with the server's basic auth.

Every answer but ``/metrics``'s, errors included, is JSON; errors are ``{"error": "<type>",
"message": "..."}``: 400 (a malformed request: not JSON, nested too deeply,
missing fields, ``inputs`` not a list, a database or collection name MongoDB
refuses), 401 (missing or wrong credentials, with ``WWW-Authenticate:
Basic``), 404 (unknown model or route), 405 (wrong method), 408 (the body
did not arrive within ``serve.body_timeout``), 413 (a body above
``serve.max_body_bytes``, refused before it is read), 422 (the model refused
the inputs: the exception its code raised), 429 (too many wrong credentials
from this address, with ``Retry-After``), 500 (anything else; logged), 503
(the database cannot be reached, with ``Retry-After``).

Database work runs in worker threads, never on the event loop. The server
keeps a bounded number of collections open (:data:`OPEN_COLLECTIONS`, the
most recently used), and opens one only for a model that is registered.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..errors import NotRegisteredError, SuperDuperError
from .limits import (
    BodyLimit,
    BodyTimeout,
    BodyTooLarge,
    LoginLimiter,
    SecurityHeaders,
    too_large_payload,
)

logger = logging.getLogger(__name__)

REALM = "superduperdb"
OPEN_COLLECTIONS = 32
RETRY_AFTER_OUTAGE = "5"
# What MongoDB refuses in names (database: the server's rules on every platform; collection: "$" and NUL).
_DATABASE_FORBIDDEN = set('/\\. "$*<>:|?\0')
MAX_DATABASE_NAME = 63


def jsonable(value: Any) -> Any:
    """A model output as JSON data (arrays and tensors as lists, bytes as base64)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"The model returned a {type(value).__name__}, which cannot be sent as JSON.")


def check_credentials(header: str | None, username: str | None, password: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``username``/``password`` (always true without auth).

    Compared in constant time; a header that is not ASCII base64 is simply wrong.

    >>> check_credentials("Basic " + base64.b64encode(b"u:p").decode(), "u", "p")
    True
    >>> check_credentials("Basic \\u00e9t\\u00e9", "u", "p"), check_credentials(None, "u", "p")
    (False, False)
    """
    if username is None and password is None:
        return True
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given_user, _, given_password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeError, ValueError):  # ValueError: a str that is not ASCII
        return False
    ok_user = hmac.compare_digest(given_user.encode(), (username or "").encode())
    ok_password = hmac.compare_digest(given_password.encode(), (password or "").encode())
    return ok_user and ok_password


def name_problem(database: Any, collection: Any) -> str | None:
    """Why MongoDB would refuse these names (None: they are fine).

    >>> name_problem("shop", "products") is None
    True
    >>> name_problem("a.b", "c"), name_problem("shop", "$cmd")
    ("database name 'a.b' contains '.'", "collection name '$cmd' contains '$'")
    """
    if not isinstance(database, str) or not database:
        return "database must be a non-empty string"
    if not isinstance(collection, str) or not collection:
        return "collection must be a non-empty string"
    bad = sorted(set(database) & _DATABASE_FORBIDDEN)
    if bad:
        return f"database name {database!r} contains {bad[0]!r}"
    if len(database.encode()) > MAX_DATABASE_NAME:
        return f"database name {database[:20]!r}... is longer than {MAX_DATABASE_NAME} bytes"
    for char in ("$", "\0"):
        if char in collection:
            return f"collection name {collection!r} contains {char!r}"
    if collection.startswith("system."):
        return f"collection name {collection!r} starts with 'system.'"
    return None


def _database_down(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the database cannot be reached (a 503, not the model's fault)."""
    import pymongo.errors

    from ..errors import ConnectionFailure

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # also when the library wrapped pymongo's error
        if isinstance(exc, (pymongo.errors.ConnectionFailure, ConnectionFailure)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class Collections:
    """The collections the server has open: at most ``size``, the most recently used (thread-safe)."""

    def __init__(self, open_collection: Callable[[str, str], Any], size: int = OPEN_COLLECTIONS) -> None:
        self._open, self.size = open_collection, size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, database: str, collection: str) -> Any:
        key = (database, collection)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        coll = self._open(database, collection)
        with self._lock:
            self._items[key] = coll
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return coll

    def __len__(self) -> int:
        return len(self._items)


def create_app(catalog: Any, *, username: str | None = None, password: str | None = None,
               max_body_bytes: int = 16 * 2**20, body_timeout: float = 30.0, max_failed_logins: int = 10,
               failed_login_window: float = 60.0, https: bool = False) -> Any:
    """The ASGI application.

    Parameters
    ----------
    catalog : object
        ``catalog.models(database, collection) -> list[str]`` (registered models, without
        opening a collection) and ``catalog.apply(database, collection, model, inputs, key)``
        (raises :class:`NotRegisteredError` for a model that is not registered). Both block:
        they run in worker threads.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limiter = LoginLimiter(max_failed_logins, failed_login_window)

    def error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
        headers = extra.pop("headers", None)
        return JSONResponse({"error": kind, "message": message, **extra}, status_code=status, headers=headers)

    def client_address(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def authorised(request: Request) -> JSONResponse | None:
        if username is None and password is None:
            return None
        address = client_address(request)
        wait = limiter.retry_after(address)
        if wait is not None:
            return error(429, "TooManyFailedLogins", f"Too many wrong credentials from {address}; try again in "
                                                     f"{wait} s.", headers={"Retry-After": str(wait)})
        header = request.headers.get("authorization")
        if check_credentials(header, username, password):
            limiter.succeeded(address)
            return None
        if header is not None:  # a client that has not tried yet is not failing
            count = limiter.failed(address)
            logger.warning("model server: wrong credentials from %s (%d in %g s)", address, count,
                           failed_login_window)
        return error(401, "AuthenticationError", "Missing or wrong credentials (HTTP basic auth).",
                     headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def list_models(request: Request) -> JSONResponse:
        if (refused := authorised(request)) is not None:
            return refused
        database, collection = request.path_params["database"], request.path_params["collection"]
        if (problem := name_problem(database, collection)) is not None:
            return error(400, "BadRequest", f"Invalid name: {problem}.")
        try:
            return JSONResponse({"models": await _run(lambda: catalog.models(database, collection))})
        except Exception as exc:
            if _database_down(exc):
                return _unavailable(exc)
            raise

    async def apply_model(request: Request) -> JSONResponse:
        if (refused := authorised(request)) is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
            return error(400, "BadRequest", "The body must be JSON (not nested too deeply): {'database', "
                                            "'collection', 'model', 'inputs': [...]}.")
        if not isinstance(body, dict):
            return error(400, "BadRequest", "The body must be a JSON object with 'database', 'collection', 'model' "
                                            "and 'inputs'.")
        missing = [k for k in ("database", "collection", "model", "inputs") if k not in body]
        if missing:
            return error(400, "BadRequest", f"Missing {', '.join(missing)}: send {{'database', 'collection', "
                                            "'model', 'inputs': [...]}.")
        names = [body[k] for k in ("database", "collection", "model")]
        if not all(isinstance(n, str) and n for n in names):
            return error(400, "BadRequest", "database, collection and model must be non-empty strings.")
        database, collection, model = names
        if (problem := name_problem(database, collection)) is not None:
            return error(400, "BadRequest", f"Invalid name: {problem}.")
        inputs, key = body["inputs"], body.get("key")
        if not isinstance(inputs, list):
            return error(400, "BadRequest", f"inputs must be a list (one item per output), not "
                                            f"{type(inputs).__name__}.")
        if key is not None and not isinstance(key, str):
            return error(400, "BadRequest", "key must be a field name (a string).")
        if key is not None and not all(isinstance(i, dict) for i in inputs):
            where = next(n for n, i in enumerate(inputs) if not isinstance(i, dict))
            return error(400, "BadRequest", f"With key={key!r} the inputs must be documents (JSON objects) with a "
                                            f"field {key!r}; input {where} is a {type(inputs[where]).__name__}.")
        try:
            outputs = await _run(lambda: catalog.apply(database, collection, model, inputs, key))
        except NotRegisteredError as exc:
            return error(404, type(exc).__name__, str(exc), available=list(getattr(exc, "available", [])))
        except Exception as exc:  # the user's model refused the inputs, or the database is away
            if _database_down(exc):
                return _unavailable(exc)
            if isinstance(exc, SuperDuperError):
                return error(422, type(exc).__name__, str(exc))
            return error(422, type(exc).__name__, f"Model {model!r} failed on these inputs: {exc}")
        try:
            return JSONResponse({"outputs": jsonable(outputs)})
        except (TypeError, ValueError, RecursionError) as exc:  # ValueError: NaN or infinity, which JSON cannot hold
            logger.error("model %r: %s", model, exc)
            return error(500, "OutputNotSerializable", str(exc))

    async def prometheus(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def _unavailable(exc: BaseException) -> JSONResponse:
        from ..config import redact

        logger.error("model server: the database cannot be reached: %s", redact(str(exc)))
        return error(503, "DatabaseUnavailable", "The database cannot be reached now; try again later.",
                     headers={"Retry-After": RETRY_AFTER_OUTAGE})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kinds = {404: "NotFound", 405: "MethodNotAllowed"}
        message = {404: f"No such endpoint: {request.url.path}. Endpoints: POST /apply_model, "
                        "GET /models/<database>/<collection>, GET /health, GET /metrics.",
                   405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code, exc.detail)
        return error(exc.status_code, kinds.get(exc.status_code, "HTTPError"), message,
                     headers=dict(exc.headers or {}) or None)

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)
        return JSONResponse(too_large_payload(exc), status_code=413, headers={"Connection": "close"})

    async def timed_out(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTimeout)
        return error(408, "RequestTimeout", f"The request body did not arrive within {exc.seconds:g} s "
                                            "(serve.body_timeout).", headers={"Connection": "close"})

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("model server: %s %s failed", request.method, request.url.path)
        return error(500, "InternalServerError", "The server failed on this request (see its log).")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/models/{database}/{collection}", list_models, methods=["GET"]),
            Route("/apply_model", apply_model, methods=["POST"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout)],
        exception_handlers={HTTPException: http_error, BodyTooLarge: too_large, BodyTimeout: timed_out,
                            Exception: server_error},
    )
    return _Measured(SecurityHeaders(app, https=https))


ENDPOINTS = ("/health", "/apply_model", "/metrics")


def endpoint_of(path: str) -> str:
    """The endpoint a request path names, as a metric label (bounded: never the path's own values).

    >>> endpoint_of("/models/db/docs"), endpoint_of("/apply_model"), endpoint_of("/nope")
    ('/models/{database}/{collection}', '/apply_model', 'other')
    """
    if path in ENDPOINTS:
        return path
    return "/models/{database}/{collection}" if path.startswith("/models/") else "other"


class _Measured:
    """ASGI middleware: every answered request counted by endpoint and status code, and timed
    (``superduperdb_server_requests_total``, ``superduperdb_server_request_duration_seconds``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, code = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.observe_request(endpoint_of(scope.get("path", "")), code[0], time.perf_counter() - start)


async def _run(fn: Callable[[], Any]) -> Any:
    """Run blocking code (the database, the model) in a worker thread, so the server keeps answering meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)
