"""The model server's HTTP application (Starlette): apply registered models to posted inputs.

Endpoints (JSON in and out):

``POST /apply_model``
    ``{"database": ..., "collection": ..., "model": ..., "inputs": [...]}``
    → ``{"outputs": [...]}``, one output per input. ``"key": "x"`` reads the
    field ``x`` of each input document instead (as ``Collection.apply_model``).
    Outputs are made JSON: arrays and tensors become nested lists, numpy
    scalars numbers, bytes base64 strings.
``GET /models/{database}/{collection}``
    → ``{"models": [...]}``.
``GET /health``
    → ``{"status": "ok"}`` (the only endpoint without authentication).

Errors come back as ``{"error": "<type>", "message": "..."}``: 401 (missing or
wrong credentials, with ``WWW-Authenticate: Basic``), 404 (unknown model,
``NotRegisteredError``), 400 (a malformed request: not JSON, missing fields,
``inputs`` not a list), 422 (the model refused the inputs: the exception its
code raised), 500 (anything else; logged).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from typing import Any

from ..errors import NotRegisteredError, SuperDuperError

logger = logging.getLogger(__name__)

REALM = "superduperdb"


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
    """Whether an ``Authorization`` header carries ``username``/``password`` (always true without auth)."""
    if username is None and password is None:
        return True
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        given_user, _, given_password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(given_user.encode(), (username or "").encode())
    ok_password = hmac.compare_digest(given_password.encode(), (password or "").encode())
    return ok_user and ok_password


def create_app(collection_of: Callable[[str, str], Any], *, username: str | None = None,
               password: str | None = None) -> Any:
    """The Starlette application; ``collection_of(database, collection)`` gives a :class:`Collection`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, kind: str, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": kind, "message": message}, status_code=status, headers=headers or None)

    def authorised(request: Request) -> JSONResponse | None:
        if check_credentials(request.headers.get("authorization"), username, password):
            return None
        return error(401, "AuthenticationError", "Missing or wrong credentials (HTTP basic auth).",
                     **{"WWW-Authenticate": f'Basic realm="{REALM}"'})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def list_models(request: Request) -> JSONResponse:
        if (refused := authorised(request)) is not None:
            return refused
        coll = collection_of(request.path_params["database"], request.path_params["collection"])
        return JSONResponse({"models": coll.list_models()})

    async def apply_model(request: Request) -> JSONResponse:
        if (refused := authorised(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return error(400, "BadRequest", "The body must be JSON: {'database', 'collection', 'model', 'inputs': [...]}.")
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
        if not isinstance(body["inputs"], list):
            return error(400, "BadRequest", f"inputs must be a list (one item per output), not "
                                            f"{type(body['inputs']).__name__}.")
        key = body.get("key")
        if key is not None and not isinstance(key, str):
            return error(400, "BadRequest", "key must be a field name (a string).")
        database, collection, model = names
        try:
            coll = collection_of(database, collection)
            # Only registered models: a request never registers one (not even an attribute model
            # 'parent.attr', which apply_model in a client would register on first use).
            outputs = await _run(lambda: coll.apply_model(model, body["inputs"], key=key, registered_only=True))
        except NotRegisteredError as exc:
            return error(404, type(exc).__name__, str(exc))
        except SuperDuperError as exc:
            return error(422, type(exc).__name__, str(exc))
        except Exception as exc:  # the user's model refused the inputs
            return error(422, type(exc).__name__, f"Model {model!r} failed on these inputs: {exc}")
        try:
            return JSONResponse({"outputs": jsonable(outputs)})
        except (TypeError, ValueError) as exc:  # ValueError: NaN or infinity, which JSON cannot hold
            logger.error("model %r: %s", model, exc)
            return error(500, "OutputNotSerializable", str(exc))

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/models/{database}/{collection}", list_models, methods=["GET"]),
        Route("/apply_model", apply_model, methods=["POST"]),
    ])


async def _run(fn: Callable[[], Any]) -> Any:
    """Run blocking model code in a worker thread, so the server keeps answering meanwhile."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)
