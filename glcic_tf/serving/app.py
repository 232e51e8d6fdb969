"""The embedded server's HTTP app: TensorFlow Serving's REST API over a `ModelManager`.

`tensorflow/serving` is what production runs (see serving/README.md); the ASGI app made by
`create_app` (Starlette) answers the same REST contract from Python where the container is not
available (laptops, CI, the contract tests in tests/serving/test_rest_api.py):

* `GET  /v1/models/NAME[/versions/V | /labels/L]`            model status
* `GET  /v1/models/NAME[/versions/V | /labels/L]/metadata`   signature defs
* `POST /v1/models/NAME[/versions/V | /labels/L]:predict`    row (`instances`) or columnar
  (`inputs`) format, `{"b64": ...}` for bytes, `signature_name` (default `serving_default`)

with TF Serving's URL grammar, JSON shapes, error messages where practical and mapping of error
codes to HTTP statuses (400 bad request, 404 unknown model or version, 500 internal, 504 past
--rest_api_timeout_in_ms, ...), plus a body size limit (413) that TF Serving does not have. It
does not implement gRPC, `:classify` and `:regress` (501) or request batching. The completion
page (`glcic_tf.serving.page`) is served at /ui, off the /v1/ paths.

Predictions (JSON decoding, the model, JSON encoding) run in a thread pool, off the event loop,
so status requests answer while predictions run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
from typing import Any

from glcic_tf.serving.errors import (ServingError, error_from_exception, invalid_argument,
                                     json_excerpt)
from glcic_tf.serving.manager import ModelManager
from glcic_tf.serving.predict_request import parse_json_body, request_to_arrays
from glcic_tf.serving.predict_response import arrays_to_json

logger = logging.getLogger("glcic_tf.serving")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# An oversized body is still read (and dropped) up to this many bytes so that the client reads the
# 413 answer instead of a connection reset; beyond it the connection is closed.
MAX_DRAIN_BYTES = 64 * 1024 * 1024

# TF Serving's URL grammar (http_rest_api_util.cc), case-insensitive like the original.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)


def predict(manager: ModelManager, name: str, version: int | None, label: str | None,
            body: bytes) -> str:
    """Handles one :predict request body end to end (blocking); returns the response JSON."""
    doc = parse_json_body(body)
    signature = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise invalid_argument("JSON Value: ", json_excerpt(doc), " not formatted correctly. "
                               "'signature_name' key must be a string value.")
    signature = signature or DEFAULT_SIGNATURE
    servable = manager.servable(name, version, label)
    if signature not in servable.signature_defs:
        raise invalid_argument("Serving signature name: \"", signature,
                               "\" not found in signature def")
    fmt, arrays = request_to_arrays(doc, servable.inputs[signature], signature)
    del doc
    try:
        outputs = servable.run(signature, arrays)
    except ServingError:
        raise
    except (TypeError, ValueError) as e:  # argument binding of the concrete function
        raise invalid_argument("Signature '", signature, "' rejected the inputs: ", e) from None
    return arrays_to_json(outputs, fmt)


def _error_response(err: ServingError):
    from starlette.responses import Response

    return Response(json.dumps({"error": err.message}), status_code=err.http_status,
                    media_type="application/json")


async def _read_body(request, limit: int) -> bytes:
    """Reads the body, answering 413 beyond `limit` bytes (Content-Length and streamed size)."""
    declared = request.headers.get("content-length")
    too_large = None
    if declared is not None:
        try:
            if int(declared) > limit:
                too_large = int(declared)
        except ValueError:
            raise invalid_argument("Content-Length is not an integer: ", declared) from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if too_large is None and total > limit:
            too_large = total
            chunks.clear()
        if too_large is not None:
            if total > limit + MAX_DRAIN_BYTES:
                break  # stop draining; the connection is closed after the answer
            continue
        chunks.append(chunk)
    if too_large is not None:
        raise ServingError("RESOURCE_EXHAUSTED",
                           f"Request body of {'at least ' if declared is None else ''}"
                           f"{too_large} bytes exceeds the limit of {limit} bytes "
                           f"(--max_body_bytes)", http_status=413)
    return b"".join(chunks)


def _parse_path(method: str, path: str):
    """(kind, name, version, label, method) for a /v1/ path, after TF Serving's regexes."""
    if method == "POST":
        m = _PREDICT_RE.fullmatch(path)
        if m:
            return "post", m.group(1), m.group(2), m.group(3), m.group(4).lower()
    elif method == "GET":
        m = _STATUS_RE.fullmatch(path)
        if m:
            kind = "metadata" if m.group(4) else "status"
            return kind, m.group(1) or "", m.group(2), m.group(3), None
    raise invalid_argument("Malformed request: ", method, " ", path)


def create_app(manager: ModelManager, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               num_threads: int = 4, timeout_seconds: float = 0.0, manage_lifecycle: bool = True,
               ui: bool = True):
    """The ASGI app (Starlette) serving TF Serving's REST API for a ModelManager.

    Args:
      manager: the models.
      max_body_bytes: larger request bodies get 413.
      num_threads: threads running predictions (JSON decoding, the model, JSON encoding).
      timeout_seconds: a prediction not answered within this many seconds gets 504 (0: none).
      manage_lifecycle: start the manager (initial load, then polling) when the app starts and
        stop it at shutdown.
      ui: serve the completion page (`glcic_tf.serving.page`) at /ui, and redirect / to it; both
        are off the /v1/ paths, so the REST API is the same either way.
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    executor = concurrent.futures.ThreadPoolExecutor(num_threads,
                                                     thread_name_prefix="glcic-predict")

    def json_response(payload: Any) -> Response:
        return Response(json.dumps(payload, indent=1), media_type="application/json")

    async def handle(request):
        path = request.url.path  # already percent-decoded, as TF Serving decodes names
        if not _V1_RE.fullmatch(path):
            return _error_response(ServingError("NOT_FOUND", f"Not found: {path}"))
        try:
            kind, name, version, label, method = _parse_path(request.method, path)
            version = int(version) if version is not None else None
            if version is not None and version >= 2**63:
                raise invalid_argument("Failed to convert version: ", version, " to numeric.")
            if kind in ("status", "metadata") and not name:
                raise invalid_argument("Missing model name in request.")
            if kind == "status":
                return json_response(manager.status(name, version, label))
            if kind == "metadata":
                return json_response(manager.servable(name, version, label).metadata)
            if method != "predict":
                raise ServingError("UNIMPLEMENTED", f":{method} is not implemented by the "
                                   "embedded server; only :predict is")
            body = await _read_body(request, max_body_bytes)
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(executor, predict, manager, name, version, label, body)
            del body
            if timeout_seconds > 0:
                try:
                    text = await asyncio.wait_for(work, timeout_seconds)
                except asyncio.TimeoutError:
                    raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
            else:
                text = await work
            return Response(text, media_type="application/json")
        except ServingError as e:
            return _error_response(e)
        except Exception as e:  # noqa: BLE001 - TF errors are client errors; others internal
            err = error_from_exception(e)
            if err.http_status >= 500:
                logger.exception("Internal error on %s %s", request.method, path)
            return _error_response(err)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_lifecycle:
            await asyncio.get_running_loop().run_in_executor(None, manager.start)
        try:
            yield
        finally:
            if manage_lifecycle:
                manager.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    routes = []
    if ui:
        from starlette.responses import RedirectResponse

        from glcic_tf.serving import page as ui_page

        names = list(manager.models)

        async def page(request):
            return ui_page.page_response(names)

        async def to_page(request):
            return RedirectResponse(ui_page.UI_PATH)

        routes += [Route(ui_page.UI_PATH, page, methods=["GET", "HEAD"]),
                   Route("/", to_page, methods=["GET", "HEAD"])]
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    routes.append(Route("/{path:path}", handle, methods=methods))
    return Starlette(routes=routes, lifespan=lifespan)
