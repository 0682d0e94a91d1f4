"""The OpenAI routes: /v1/chat/completions, /v1/embeddings and /v1/models.

Why a router of its own: these answer in OpenAI's shapes (app/server/openai_api.py), so that an
app written for OpenAI's client works unchanged; a role is chosen by `role` or by a model alias
("allinone:sentiment"), and a label role answers as a finished completion.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from app.llm import Completion, TokenLogprob
from app.roles.assistant import Assistant, Turn, Verdict
from app.roles.conversations import verdict_dict
from app.roles.tools import Tool
from app.server.openai_api import (
    ROLE_ALIAS,
    ChatRequest,
    EmbeddingRequest,
    chunk_json,
    decision_headers,
    embedding_json,
    instructions_of,
    is_call,
    label_completion,
    logprobs_json,
    message_json,
    role_name,
    split_messages,
    total_usage,
    usage_json,
)
from app.server.state import MAX_BATCH, loaded_assistant
from app.server.streaming import pieces, unless_gone

router = APIRouter()


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    current = loaded_assistant(request)
    ids = [current.engine.model_name] + [ROLE_ALIAS + name for name in current.roles.roles]
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "owned_by": "local"} for i in ids],
    }


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest, request: Request, response: Response
) -> dict[str, Any] | EventSourceResponse:
    current = loaded_assistant(request)
    body.check_supported()
    role = role_name(current, body.model, body.role)
    text, history = split_messages(body.messages)
    instructions = instructions_of(body.messages)
    meta = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": body.model or current.engine.model_name,
    }
    if current.roles.get(role).is_classifier:
        body.refuse_for_labels(role)
        tools: list[Tool] = []
        completions = [await run_in_threadpool(label_completion, current, text, role)]
    else:
        # In a thread: the mood step, and a tools request's call-or-prose decision, run on
        # the model before the reply streams.
        tools, completions, verdict = await run_in_threadpool(
            _replies, body, current, role, text, history, instructions
        )
        if verdict is not None:  # an extension field: OpenAI's clients ignore it
            meta["sentiment"] = verdict_dict(verdict)
    parallel = body.parallel_tool_calls is not False
    headers = decision_headers(completions)
    if body.stream:
        chunks = _openai_stream(request, completions, meta, body, tools, parallel)
        return EventSourceResponse(chunks, headers=headers)

    def finish_all() -> list[dict[str, Any]]:
        return [
            _choice(index, completion, tools, parallel, body.logprobs)
            for index, completion in enumerate(completions)
        ]

    choices = await unless_gone(request, completions, finish_all)
    response.headers.update(headers)
    return {
        **meta,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage_json(total_usage(completions)),
    }


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    current = loaded_assistant(request)
    texts = body.texts(MAX_BATCH)
    vectors = await run_in_threadpool(current.embed, texts)
    tokens = sum(len(current.engine.tokenize(text)) for text in texts)
    return {
        "object": "list",
        "data": [embedding_json(v, i, body.encoding_format) for i, v in enumerate(vectors)],
        "model": body.model or current.engine.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _replies(
    body: ChatRequest,
    current: Assistant,
    role: str,
    text: str,
    history: list[Turn],
    instructions: str | None,
) -> tuple[list[Tool], list[Completion], Verdict | None]:
    """The tools offered, one reply per choice (not yet generated), and the mood verdict
    when the replies were felt (every choice feels the same message the same way).

    Each raises its 4xx here, before any has touched the model.
    """
    options = body.sampling()
    json_format = body.json_format()
    choice = body.tool_choice_name()
    tools = body.tool_list() if choice != "none" else []
    answers = [
        current.answer(
            text,
            history,
            role=role,
            json_format=json_format,
            tools=tools,
            tool_choice=choice,
            instructions=instructions,
            seed=seed,
            **options,
        )
        for seed in body.seeds(current.settings.seed)
    ]
    verdict = next((verdict for verdict, _ in answers if verdict is not None), None)
    return tools, [completion for _, completion in answers], verdict


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


async def _openai_stream(
    request: Request,
    completions: list[Completion],
    meta: dict[str, Any],
    body: ChatRequest,
    tools: list[Tool],
    parallel: bool,
) -> AsyncIterator[dict]:
    """Each choice in turn (its chunks carry its index), the usage chunk if asked, [DONE].

    A tool call goes out whole once written (its arguments must parse first); a reply to a
    tools request that was decided as prose streams piece by piece like any other.
    A choice left unfinished (the client went away) ends the stream.
    """
    for index, completion in enumerate(completions):
        start = {"role": "assistant", "content": ""}
        yield {"data": chunk_json(meta, index, start, None)}
        if tools and is_call(completion):  # it goes out whole once written
            message, finish = await run_in_threadpool(message_json, completion, tools, parallel)
            delta = {key: value for key, value in message.items() if key != "role"}
            for position, call in enumerate(delta.get("tool_calls", [])):
                call["index"] = position
            yield {"data": chunk_json(meta, index, delta, None, _taken(completion, body))}
            yield {"data": chunk_json(meta, index, {}, finish)}
            continue
        async for piece in pieces(request, completion):
            delta = {"content": piece}
            yield {"data": chunk_json(meta, index, delta, None, _taken(completion, body))}
        if completion.finish_reason is None:
            return  # the client left: `pieces` closed the stream
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
