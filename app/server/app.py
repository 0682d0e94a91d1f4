"""The local HTTP server: a thin shell that speaks the OpenAI API (optional extra `server`).

One Assistant (one model) serves every client. Blocking llama.cpp calls run in a thread pool;
the engine decodes up to --parallel replies together and serves labels between two of its steps
(app/llm/scheduler.py). Streams go out as server-sent events and check for a gone client after every
piece; a non-streamed reply is watched while it is generated. Either way a gone client's reply
is closed, which frees its slot at once.
Errors leave as OpenAI-style bodies ({"error": {"message", "type", "param", "code"}}) with a 4xx
status; the server never dies on input. Every request field is honoured or refused with a 400
naming it (app/server/openai_api.py lists them, and the few accepted and ignored with the reason).

    POST /v1/chat/completions   OpenAI chat: usage, n, seed, stop, logprobs / top_logprobs,
                                presence / frequency penalties, response_format (JSON object or
                                schema, grammar-bound), tools (the template's tool calls),
                                stream with stream_options.include_usage; `model` may name a
                                role ("allinone:sentiment") or use `role`
    POST /v1/embeddings         mean middle-layer states of the same model, L2-normalised
    GET  /v1/models             the loaded model and one alias per role
    POST /v1/sentiment          {"input": "text" | ["a", "b"]} -> labels + confidences in order
    POST /v1/respond            feel + reply: the sentiment event first, then the streamed reply
    GET  /health                200 once the model is loaded
    GET  /                      a small chat page (no build step, no CDN)
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import AppStatus, EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AllInOneError, InputError, UnknownRole
from app.llm.completion import Completion, TokenLogprob
from app.roles.assistant import Assistant, Verdict
from app.roles.tools import Tool
from app.server.openai_api import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    chunk_json,
    embedding_json,
    logprobs_json,
    message_json,
    split_messages,
    total_usage,
    usage_json,
)

log = logging.getLogger("allinone.server")
PAGE = Path(__file__).resolve().parent / "static" / "chat.html"
MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 256
ROLE_ALIAS = "allinone:"
DISCONNECT_POLL = 0.25  # seconds between checks for a gone client while a reply is generated
T = TypeVar("T")


class SentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str]
    role: str | None = None


class RespondRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    stream: bool = True
    seed: int | None = None


def error_body(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status}},
        status_code=status,
    )


class BodyTooLarge(Exception):
    """A request body (chunked, or with a false Content-Length) went past MAX_BODY_BYTES."""


class RequestLog:
    """Pure ASGI middleware: a request id, the body size limit, one log line per request.

    Pure ASGI rather than `@app.middleware("http")`: the log line is written when the last byte
    of a stream has gone out (so its time is the whole request), and the size limit also holds
    for chunked bodies that carry no Content-Length.
    """

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
                await _too_large()(scope, receive, send_with_id)
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


def _too_large() -> JSONResponse:
    return error_body(413, f"Request body over {MAX_BODY_BYTES} bytes. Send less per request.")


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
    app.state.assistant = None
    app.add_middleware(RequestLog)

    @app.exception_handler(AllInOneError)
    async def _our_errors(request: Request, error: AllInOneError) -> JSONResponse:
        status = 404 if isinstance(error, UnknownRole) else 400
        param = getattr(error, "param", None) or getattr(error, "path", None)
        return error_body(status, str(error), param=param)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_body(400, "The body is not valid JSON. Send a JSON object.")
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        message = first["msg"]
        if first.get("type") == "extra_forbidden":
            message = "unknown field; this server does not support it (see the README's list)."
        return error_body(400, f"{where or 'body'}: {message}", param=where or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_body(500, "Internal error; see the server log.", kind="server_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_errors(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
            return _too_large()
        return error_body(error.status_code, str(error.detail))

    def assistant() -> Assistant:
        if app.state.assistant is None:
            raise InputError("The model is still loading; retry in a moment (see GET /health).")
        return app.state.assistant

    @app.get("/health")
    async def health() -> JSONResponse:
        if app.state.assistant is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": app.state.assistant.engine.model_name})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        current = assistant()
        ids = [current.engine.model_name] + [ROLE_ALIAS + name for name in current.roles.roles]
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "owned_by": "local"} for i in ids],
        }

    @app.post("/v1/sentiment")
    async def sentiment(body: SentimentRequest) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise InputError("input: give a text or a non-empty list of texts.")
        if len(texts) > MAX_BATCH:
            raise InputError(f"input: at most {MAX_BATCH} texts per request.")
        current = assistant()
        verdicts = await run_in_threadpool(lambda: list(current.classify_many(texts, body.role)))
        return {"object": "list", "data": [_verdict_json(v, i) for i, v in enumerate(verdicts)]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        current = assistant()
        body.check_supported()
        role = _role_name(body, current)
        text, history = split_messages(body.messages)
        meta = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": body.model or current.engine.model_name,
        }
        tools: list[Tool] = []
        if current.roles.get(role).is_classifier:
            body.refuse_for_labels(role)
            completions = [await run_in_threadpool(_label_completion, current, text, role)]
        else:
            options = body.sampling()
            json_format = body.json_format()
            choice = body.tool_choice_name()
            tools = body.tool_list() if choice != "none" else []
            completions = [  # each raises its 4xx here; none has touched the model yet
                current.reply(
                    text,
                    history,
                    role=role,
                    json_format=json_format,
                    tools=tools,
                    tool_choice=choice,
                    seed=seed,
                    **options,
                )
                for seed in body.seeds(current.settings.seed)
            ]
        parallel = body.parallel_tool_calls is not False
        if body.stream:
            return EventSourceResponse(
                _openai_stream(request, completions, meta, body, tools, parallel)
            )

        def finish_all() -> list[dict[str, Any]]:
            return [
                _choice(index, completion, tools, parallel, body.logprobs)
                for index, completion in enumerate(completions)
            ]

        choices = await _unless_gone(request, completions, finish_all)
        return {
            **meta,
            "object": "chat.completion",
            "choices": choices,
            "usage": usage_json(total_usage(completions)),
        }

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        current = assistant()
        texts = body.texts(MAX_BATCH)
        vectors = await run_in_threadpool(current.embed, texts)
        tokens = sum(len(current.engine.tokenize(text)) for text in texts)
        return {
            "object": "list",
            "data": [embedding_json(v, i, body.encoding_format) for i, v in enumerate(vectors)],
            "model": body.model or current.engine.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/v1/respond")
    async def respond(body: RespondRequest, request: Request):
        current = assistant()
        text, history = split_messages(body.messages)
        sampling = {
            "temperature": body.temperature,
            "max_tokens": body.max_tokens,
            "seed": body.seed,
        }
        verdict, stream = await run_in_threadpool(
            lambda: current.respond(text, history, **sampling)
        )
        if not body.stream:
            reply = await _unless_gone(request, [stream], lambda: "".join(stream))
            return {"sentiment": _verdict_json(verdict, 0), "reply": reply}
        return EventSourceResponse(_respond_stream(request, verdict, stream))

    return app


def _role_name(body: ChatRequest, current: Assistant) -> str:
    if body.role:
        return current.roles.get(body.role).name
    if body.model and body.model.startswith(ROLE_ALIAS):
        return current.roles.get(body.model.removeprefix(ROLE_ALIAS)).name
    return current.roles.defaults.chat


def _label_completion(current: Assistant, text: str, role: str) -> Completion:
    """A label role's answer as a finished completion: its label, with tokens counted as for
    a reply (the prompt the engine evaluated, the label's tokens)."""
    verdict = current.classify(text, role)
    prompt = current.prompt_for(current.roles.get(role), text)
    done = Completion(len(prompt.tokens)).run(iter([verdict.label]))
    done.completion_tokens = len(current.engine.tokenize(verdict.label))
    done.finish_reason = "stop"
    return done


def _choice(
    index: int, completion: Completion, tools: list[Tool], parallel: bool, logprobs: bool | None
) -> dict[str, Any]:
    """One finished choice of a non-streamed answer (generating it first)."""
    message, finish = message_json(completion, tools, parallel)
    return {
        "index": index,
        "message": message,
        "finish_reason": finish,
        "logprobs": logprobs_json(completion.logprobs) if logprobs else None,
    }


def _verdict_json(verdict: Verdict, index: int) -> dict[str, Any]:
    return {"index": index, "label": verdict.label, "confidence": round(verdict.confidence, 4)}


async def _unless_gone(request: Request, completions: list[Completion], work: Callable[[], T]) -> T:
    """Run `work` (which generates the completions to their end) in a thread, watching the
    client meanwhile: if it leaves, close them, so the model stops generating for nobody."""
    task = asyncio.ensure_future(run_in_threadpool(work))
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL)
        if not task.done() and await request.is_disconnected():
            for completion in completions:
                completion.close()  # thread-safe: generation stops before its next token
            request_id = request.scope.get("state", {}).get("request_id", "-")
            log.info("%s client gone before the reply ended; generation stopped", request_id)
            break
    return await task


async def _pieces(request: Request, stream: Iterator[str]) -> AsyncIterator[str]:
    """Pull pieces from the blocking stream in a thread; stop at once if the client has left.

    The stream is closed in `finally` on every exit (done, client gone, task cancelled), which
    releases the model's lock right away. Closing it synchronously is safe: a cancelled
    `run_in_threadpool` still waits for its worker thread, so no thread is inside the generator.
    """
    sentinel = object()
    sent = 0
    gone = False
    try:
        while True:
            piece = await run_in_threadpool(next, stream, sentinel)
            if piece is sentinel:
                return
            if await request.is_disconnected():
                gone = True
                return
            sent += 1
            yield piece  # type: ignore[misc]
    except BaseException:
        gone = True  # cancelled: sse-starlette saw the client disconnect
        raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if gone:
            request_id = request.scope.get("state", {}).get("request_id", "-")
            log.info("%s client gone after %d pieces; stream closed", request_id, sent)


async def _openai_stream(
    request: Request,
    completions: list[Completion],
    meta: dict[str, Any],
    body: ChatRequest,
    tools: list[Tool],
    parallel: bool,
) -> AsyncIterator[dict]:
    """Each choice in turn (its chunks carry its index), the usage chunk if asked, [DONE].

    With tools, a choice goes out whole once written: only its end says whether it is a call.
    A choice left unfinished (the client went away) ends the stream.
    """
    for index, completion in enumerate(completions):
        start = {"role": "assistant", "content": ""}
        yield {"data": chunk_json(meta, index, start, None)}
        if tools:
            message, finish = await run_in_threadpool(message_json, completion, tools, parallel)
            delta = {key: value for key, value in message.items() if key != "role"}
            for position, call in enumerate(delta.get("tool_calls", [])):
                call["index"] = position
            yield {"data": chunk_json(meta, index, delta, None, _taken(completion, body))}
            yield {"data": chunk_json(meta, index, {}, finish)}
            continue
        async for piece in _pieces(request, completion):
            delta = {"content": piece}
            yield {"data": chunk_json(meta, index, delta, None, _taken(completion, body))}
        if completion.finish_reason is None:
            return  # the client left: _pieces closed the stream
        finish = completion.finish_reason
        yield {"data": chunk_json(meta, index, {}, finish, _taken(completion, body))}
    if body.include_usage:
        usage = {**meta, "object": "chat.completion.chunk", "choices": []}
        usage["usage"] = usage_json(total_usage(completions))
        yield {"data": json.dumps(usage)}
    yield {"data": "[DONE]"}


def _taken(completion: Completion, body: ChatRequest) -> list[TokenLogprob] | None:
    """The logprobs of the tokens sampled since the last chunk, when the client asked."""
    return completion.new_logprobs() if body.logprobs else None


async def _respond_stream(request, verdict: Verdict, stream) -> AsyncIterator[dict]:
    yield {"event": "sentiment", "data": json.dumps(_verdict_json(verdict, 0), ensure_ascii=False)}
    async for piece in _pieces(request, stream):
        yield {"event": "delta", "data": json.dumps({"content": piece}, ensure_ascii=False)}
    yield {"event": "done", "data": "[DONE]"}
