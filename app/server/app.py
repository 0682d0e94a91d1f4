"""The local HTTP server: a thin shell that speaks the OpenAI API (optional extra `server`).

One Assistant (one model) serves every client. Blocking llama.cpp calls run in a thread pool;
the engine decodes up to --parallel replies together and serves labels between two of its steps
(app/llm/scheduler.py). Streams go out as server-sent events and check for a gone client after every
piece; a non-streamed reply is watched while it is generated. Either way a gone client's reply
is closed, which frees its slot at once (app/server/streaming.py).
Errors leave as OpenAI-style bodies ({"error": {"message", "type", "param", "code"}}) with a 4xx
status; the server never dies on input (app/server/errors.py). Every request field is honoured or
refused with a 400 naming it (app/server/openai_api.py lists them, and the few accepted and
ignored with the reason).

    POST /v1/chat/completions   OpenAI chat: usage, n, seed, stop, logprobs / top_logprobs,
                                presence / frequency penalties, response_format (JSON object or
                                schema, grammar-bound), tools (the template's tool calls),
                                stream with stream_options.include_usage; `model` may name a
                                role ("allinone:sentiment") or use `role`
    POST /v1/embeddings         mean middle-layer states of the same model, L2-normalised
    GET  /v1/models             the loaded model and one alias per role
                                (these three: app/server/routes_openai.py)
    POST /v1/responses          OpenAI Responses on the conversation store: previous_response_id
                                chains, instructions, text.format, tools, the full event stream;
    GET|DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items
                                (app/server/routes_responses.py)
    POST /v1/sentiment          {"input": "text" | ["a", "b"]} -> labels + confidences in order
    POST /v1/respond            feel + reply: the sentiment event first, then the streamed reply;
                                with `session` or `keep` the turn is kept in the store
                                (these two: app/server/routes_native.py)
    GET|PATCH|DELETE /v1/sessions[/{key}]
                                the kept conversations, for the page's sidebar
                                (app/server/routes_sessions.py)
    GET  /health                200 once the model is loaded
    GET  /                      a small chat page (no build step, no CDN)
                                (these two: app/server/routes_page.py)

This module builds the app from those parts and holds the Assistant in `app.state`.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sse_starlette.sse import AppStatus
from starlette.concurrency import run_in_threadpool

from app.roles.assistant import Assistant
from app.server import (
    routes_native,
    routes_openai,
    routes_page,
    routes_responses,
    routes_sessions,
)
from app.server.errors import install_error_handlers
from app.server.request_log import RequestLog

log = logging.getLogger("allinone.server")


def create_app(load: Callable[[], Assistant]) -> FastAPI:
    """The app; `load` builds the Assistant once at start-up (tests may pass a ready one)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.assistant = await run_in_threadpool(load)
        log.info("model loaded: %s", app.state.assistant.engine.model_name)
        yield

    # On SIGTERM, sse-starlette would cut every open stream at once. Ours are finite (max_tokens),
    # so let them finish: uvicorn stops accepting, drains in-flight requests within its
    # graceful-shutdown timeout, then exits.
    AppStatus.disable_automatic_graceful_drain()
    app = FastAPI(title="All-in-One", version="0.1.0", lifespan=lifespan)
    app.state.assistant = None  # until loaded: /health says so, the other routes ask to retry
    app.add_middleware(RequestLog)
    install_error_handlers(app)
    app.state.store = None  # opened on first use (app/server/state.py)
    for routes in (routes_page, routes_openai, routes_native, routes_responses, routes_sessions):
        app.include_router(routes.router)
    return app


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; True if it took effect (glibc only).

    Why: every thread of the request pool gets its own arena by default (up to 8 per core),
    and each keeps the high-water mark of the large, short-lived buffers a request allocates
    (a restored prefix state, llama.cpp's 151k-entry candidate array per sampled token), so a
    long-running server's RSS creeps up with the number of threads that ever ran a request.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        return False
