"""Request errors of the embedded server, as TF Serving reports them.

A failed request answers `{"error": MESSAGE}` with the HTTP status TF Serving maps the error's
code to. Every layer of the server (the model manager, the JSON codec, the app) raises
`ServingError` with a TF error code name; TensorFlow's own errors (tf.errors.OpError, e.g. an
image that does not decode) are mapped by `error_from_exception`, so they reach the client as
the 4xx TF Serving would give rather than as a 500.
"""

from __future__ import annotations

import json
from typing import Any

# tensorflow/core/protobuf/error_codes.proto, by value.
ERROR_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
               "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
               "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
               "UNAUTHENTICATED")

# tensorflow_serving/model_servers/http_server.cc: ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request failed; `code` is a TF error code name (or an HTTP status for 413)."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def invalid_argument(*parts: Any) -> ServingError:
    """An INVALID_ARGUMENT (400) error whose message is `parts` joined, as TF Serving's
    `errors::InvalidArgument(...)` builds its messages."""
    return ServingError("INVALID_ARGUMENT", "".join(str(p) for p in parts))


def json_excerpt(value: Any, limit: int = 200) -> str:
    """`value` as JSON text for an error message, cut to `limit` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def error_from_exception(e: BaseException) -> ServingError:
    """Maps a TensorFlow error (tf.errors.OpError) or any exception to a ServingError."""
    if isinstance(e, ServingError):
        return e
    code = getattr(e, "error_code", None)
    message = getattr(e, "message", None)
    if isinstance(code, int) and 0 < code < len(ERROR_CODES) and isinstance(message, str):
        return ServingError(ERROR_CODES[code], _strip_eager_context(message))
    return ServingError("INTERNAL", f"{type(e).__name__}: {e}")


def _strip_eager_context(message: str) -> str:
    """Drops the Python-only "Graph execution error: Detected at node ... (most recent call
    last): <traceback>" preamble, leaving the op's own message as TF Serving reports it."""
    if not message.startswith("Graph execution error:"):
        return message
    lines = message.split("\n")[1:]
    while lines and (not lines[0].strip() or lines[0].startswith(("Detected at node", " ", "\t"))
                     or lines[0].strip() == "<stack traces unavailable>"):
        lines.pop(0)
    return "\n".join(lines) or message
