"""This server's own routes: /v1/sentiment (labels for texts) and /v1/respond (feel + reply).

Why apart from the OpenAI routes: their shapes are ours, not OpenAI's, so they need no list of
honoured and refused fields; a client sees the sentiment before the first piece of the reply.

/v1/respond is stateless unless asked to keep the turn: `"session": KEY` (a conversation's id or
name) continues that stored conversation, whose history then comes from the store, so the client
sends only the new message; `"keep": true` without a session starts a new one. A kept turn's
stream opens with a `session` event {id, turn_id}, before the sentiment. The conversations are
listed, opened, renamed and deleted through /v1/sessions (app/server/routes_sessions.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from app.errors import InputError
from app.roles.assistant import Verdict
from app.roles.conversations import Conversations
from app.roles.store import ConversationNotFound
from app.server.openai_api import ChatMessage, instructions_of, split_messages
from app.server.routes_sessions import not_found
from app.server.state import MAX_BATCH, loaded_assistant, loaded_store
from app.server.streaming import pieces, unless_gone

router = APIRouter()


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
    session: str | None = Field(default=None, min_length=1)  # a kept conversation's id or name
    keep: bool = False  # keep the turn; without a session: in a new conversation


@router.post("/v1/sentiment")
async def sentiment(body: SentimentRequest, request: Request) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InputError("input: give a text or a non-empty list of texts.")
    if len(texts) > MAX_BATCH:
        raise InputError(f"input: at most {MAX_BATCH} texts per request.")
    current = loaded_assistant(request)
    verdicts = await run_in_threadpool(lambda: list(current.classify_many(texts, body.role)))
    return {"object": "list", "data": [_verdict_json(v, i) for i, v in enumerate(verdicts)]}


@router.post("/v1/respond", response_model=None)
async def respond(body: RespondRequest, request: Request) -> dict[str, Any] | EventSourceResponse:
    current = loaded_assistant(request)
    text, history = split_messages(body.messages)
    sampling = {"temperature": body.temperature, "max_tokens": body.max_tokens, "seed": body.seed}
    if body.session is not None or body.keep:
        return await _respond_kept(body, request, text, sampling)
    instructions = instructions_of(body.messages)  # added after the role's prompt, as on /v1/chat
    verdict, stream = await run_in_threadpool(
        lambda: current.respond(text, history, instructions=instructions, **sampling)
    )
    if not body.stream:
        reply = await unless_gone(request, [stream], lambda: "".join(stream))
        return {"sentiment": _verdict_json(verdict, 0), "reply": reply}
    return EventSourceResponse(_respond_stream(request, verdict, stream))


async def _respond_kept(
    body: RespondRequest, request: Request, text: str, sampling: dict[str, Any]
) -> dict[str, Any] | EventSourceResponse:
    """The turn kept in the store: in the conversation `body.session`, or in a new one."""
    if len(body.messages) != 1:
        raise InputError(
            "messages: with session or keep, send only the new user message; "
            "the conversation's history comes from the store."
        )
    conversations = Conversations(loaded_assistant(request), loaded_store(request))
    try:
        said = await run_in_threadpool(lambda: conversations.say(body.session, text, **sampling))
    except ConversationNotFound:
        raise not_found(body.session or "") from None
    session = {"id": said.conversation_id, "turn_id": said.turn_id}
    if not body.stream:
        reply = await unless_gone(request, [said.stream], lambda: "".join(said.stream))
        return {"session": session, "sentiment": _verdict_json(said.verdict, 0), "reply": reply}
    first = {"event": "session", "data": json.dumps(session)}
    return EventSourceResponse(_respond_stream(request, said.verdict, said.stream, first))


def _verdict_json(verdict: Verdict, index: int) -> dict[str, Any]:
    return {"index": index, "label": verdict.label, "confidence": round(verdict.confidence, 4)}


async def _respond_stream(
    request: Request, verdict: Verdict, stream: Iterator[str], first: dict | None = None
) -> AsyncIterator[dict]:
    """The sentiment event first (after `first`, if given), then the reply's pieces as delta
    events, then done."""
    if first is not None:
        yield first
    yield {"event": "sentiment", "data": json.dumps(_verdict_json(verdict, 0), ensure_ascii=False)}
    async for piece in pieces(request, stream):
        yield {"event": "delta", "data": json.dumps({"content": piece}, ensure_ascii=False)}
    yield {"event": "done", "data": "[DONE]"}
