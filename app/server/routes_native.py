"""This server's own routes: /v1/sentiment (labels for texts) and /v1/respond (feel + reply).

Why apart from the OpenAI routes: their shapes are ours, not OpenAI's, so they need no list of
honoured and refused fields; a client sees the sentiment before the first piece of the reply.
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
from app.server.openai_api import ChatMessage, split_messages
from app.server.state import MAX_BATCH, loaded_assistant
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
    verdict, stream = await run_in_threadpool(lambda: current.respond(text, history, **sampling))
    if not body.stream:
        reply = await unless_gone(request, [stream], lambda: "".join(stream))
        return {"sentiment": _verdict_json(verdict, 0), "reply": reply}
    return EventSourceResponse(_respond_stream(request, verdict, stream))


def _verdict_json(verdict: Verdict, index: int) -> dict[str, Any]:
    return {"index": index, "label": verdict.label, "confidence": round(verdict.confidence, 4)}


async def _respond_stream(
    request: Request, verdict: Verdict, stream: Iterator[str]
) -> AsyncIterator[dict]:
    """The sentiment event first, then the reply's pieces as delta events, then done."""
    yield {"event": "sentiment", "data": json.dumps(_verdict_json(verdict, 0), ensure_ascii=False)}
    async for piece in pieces(request, stream):
        yield {"event": "delta", "data": json.dumps({"content": piece}, ensure_ascii=False)}
    yield {"event": "done", "data": "[DONE]"}
