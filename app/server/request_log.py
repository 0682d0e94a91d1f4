"""Every request's id, its body size limit and its one log line, as pure ASGI middleware.

Pure ASGI rather than `@app.middleware("http")`: the log line is written when the last byte of a
stream has gone out (so its time is the whole request), and the size limit also holds for chunked
bodies that carry no Content-Length.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.server.errors import MAX_BODY_BYTES, BodyTooLarge, too_large

log = logging.getLogger("allinone.server")


def request_id_of(request: Request) -> str:
    """The id RequestLog gave the request, for log lines written outside it."""
    return request.scope.get("state", {}).get("request_id", "-")


class RequestLog:
    """The middleware: takes the client's X-Request-Id (or makes one) and sends it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1").strip()[:64]
        request_id = given or uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                await too_large()(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s %s -> %d in %.0f ms",
                request_id,
                scope["method"],
                scope["path"],
                status,
                elapsed_ms,
            )
