"""Errors as OpenAI-style bodies: {"error": {"message", "type", "param", "code"}} with a status.

Why one module: every way a request can fail (our own errors, pydantic's validation, Starlette's
HTTP errors, a bug, a body over the size limit) must leave in the same shape a client's OpenAI
library understands, and the server must never die on input.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AllInOneError, InputTooLong, UnknownRole

log = logging.getLogger("allinone.server")
MAX_BODY_BYTES = 1_000_000


class BodyTooLarge(Exception):
    """A request body (chunked, or with a false Content-Length) went past MAX_BODY_BYTES."""


class NotFound(AllInOneError):
    """Something a request names by id (a stored response) is not there: a 404. `code` is
    OpenAI's error code for it, when it has one ("previous_response_not_found")."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def error_body(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | int | None = None,
) -> JSONResponse:
    code = status if code is None else code
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        status_code=status,
    )


def too_large() -> JSONResponse:
    return error_body(413, f"Request body over {MAX_BODY_BYTES} bytes. Send less per request.")


def install_error_handlers(app: FastAPI) -> None:
    """Route each kind of failure to its body; anything unforeseen is a logged 500."""
    app.add_exception_handler(AllInOneError, _our_errors)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(Exception, _bug)
    app.add_exception_handler(StarletteHTTPException, _http_errors)


async def _our_errors(request: Request, error: AllInOneError) -> JSONResponse:
    # Not there: an unknown role, a stored response or turn (the store's errors are LookupErrors).
    status = 404 if isinstance(error, (UnknownRole, NotFound, LookupError)) else 400
    param = getattr(error, "param", None) or getattr(error, "path", None)
    # OpenAI's code for a prompt over the context, which clients test for by name.
    code = "context_length_exceeded" if isinstance(error, InputTooLong) else None
    return error_body(status, str(error), param=param, code=getattr(error, "code", code))


async def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_body(400, "The body is not valid JSON. Send a JSON object.")
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    message = first["msg"]
    if first.get("type") == "extra_forbidden":
        message = "unknown field; this server does not support it (see docs/openai-api.md)."
    return error_body(400, f"{where or 'body'}: {message}", param=where or None)


async def _bug(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return error_body(500, "Internal error; see the server log.", kind="server_error")


async def _http_errors(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if isinstance(error.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
        return too_large()
    return error_body(error.status_code, str(error.detail))
