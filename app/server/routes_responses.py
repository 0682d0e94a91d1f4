"""OpenAI's Responses API on the conversation store: POST /v1/responses and the stored responses.

Why on the store: a `previous_response_id` chain is the store's chain of turns, so a Responses
conversation survives a restart and shows in `allinone sessions list` and the chat page's
sidebar, and a conversation begun elsewhere can be continued here by its turn's id.

    POST   /v1/responses                      a reply (streamed as typed events with stream)
    GET    /v1/responses/{id}                 the Response object, rebuilt from the stored turn
    DELETE /v1/responses/{id}                 forget it
    GET    /v1/responses/{id}/input_items     the conversation the model saw, as items

Each request is one turn: begun in the store (in_progress, its input and the mood verdict)
before the reply is generated, finished with its output (completed; incomplete when cut by
max_output_tokens or when the client left). `store: false` writes nothing.
Shapes and the honoured / refused fields: app/server/responses_api.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from app.llm import Completion
from app.roles.assistant import Assistant, Turn, Verdict
from app.roles.conversations import history_of, usage_of, verdict_dict
from app.roles.store import ConversationStore, Status, StoredTurn, new_id
from app.roles.tools import Tool, split_tool_calls
from app.server.errors import NotFound
from app.server.openai_api import (
    FieldError,
    decision_headers,
    is_call,
    join_instructions,
    label_completion,
    role_name,
)
from app.server.request_log import request_id_of
from app.server.responses_api import (
    Events,
    ResponseShape,
    ResponsesRequest,
    function_call_item,
    input_items,
    instruction_texts,
    item_status,
    output_message,
    pending_turn,
    served_inputs,
    served_outputs,
    stored_shape,
    verdict_metadata,
)
from app.server.state import loaded_assistant, loaded_store
from app.server.streaming import pieces, unless_gone

log = logging.getLogger("allinone.server")
router = APIRouter()


@dataclass
class Plan:
    """A reply about to be generated, and what its Response needs to say about it."""

    role: str
    completion: Completion
    tools: list[Tool]
    verdict: Verdict | None
    calls_kept: int | None


class Keeper:
    """Writes the turn's end into the store once (nothing when the request said store: false)."""

    def __init__(self, store: ConversationStore | None, turn_id: str) -> None:
        self.store = store
        self.turn_id = turn_id
        self.done = False

    def finish(self, output: list[dict[str, Any]], status: Status, completion: Completion) -> None:
        if self.done:
            return
        self.done = True
        if self.store is not None:
            self.store.finish_turn(self.turn_id, output, status=status, usage=usage_of(completion))


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, request: Request, response: Response
) -> dict[str, Any] | EventSourceResponse:
    current = loaded_assistant(request)
    body.check_supported()
    items = input_items(body.input)
    store = loaded_store(request) if body.store or body.previous_response_id else None
    chain = await run_in_threadpool(_chain, store, body.previous_response_id)
    plan = await run_in_threadpool(_plan, current, body, chain, items)
    shape = ResponseShape(
        id=new_id("resp_"),
        model=body.model or current.engine.model_name,
        instructions=body.instructions,
        previous_response_id=body.previous_response_id,
        metadata=verdict_metadata(verdict_dict(plan.verdict) if plan.verdict else None),
        echo=body.echo(),
    )
    kept = store if body.store else None
    if kept is not None:
        turn = await run_in_threadpool(
            lambda: kept.begin_turn(
                None,
                body.previous_response_id,
                items,
                instructions=body.instructions,
                role=plan.role,
                model=shape.model,
                verdict=verdict_dict(plan.verdict) if plan.verdict else None,
            )
        )
        shape.id, shape.created_at = turn.id, turn.created_at
    keeper = Keeper(kept, shape.id)
    headers = decision_headers([plan.completion])
    if body.stream:
        return EventSourceResponse(_stream(request, plan, shape, keeper), headers=headers)
    response.headers.update(headers)
    return await _whole(request, plan, shape, keeper)


@router.get("/v1/responses/{response_id}")
def get_response(response_id: str, request: Request) -> dict[str, Any]:
    turn = _stored(loaded_store(request), response_id)
    return stored_shape(turn).json(turn.status, served_outputs(turn), turn.usage)


@router.delete("/v1/responses/{response_id}")
def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    if not loaded_store(request).delete_turn(response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
def list_input_items(
    response_id: str,
    request: Request,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,  # accepted and ignored, as on POST
) -> dict[str, Any]:
    """The items of the whole chain up to this turn's input: the conversation as the model saw
    it (earlier turns' inputs and outputs, as `history_of` shows them), newest first unless
    order=asc; `after` an item id, to page on."""
    chain = loaded_store(request).chain(response_id)
    if not chain:
        raise _not_found(response_id)
    items: list[dict[str, Any]] = []
    for turn in chain[:-1]:
        items += served_inputs(turn) + served_outputs(turn)
    items += served_inputs(chain[-1])
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise FieldError("after", f"no item {after!r} in this response's input items.")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


# -- the reply ------------------------------------------------------------------------------


def _chain(store: ConversationStore | None, previous_id: str | None) -> list[StoredTurn]:
    """The stored turns that lead to `previous_id`, oldest first; a 404 when it is not kept."""
    if previous_id is None or store is None:
        return []
    chain = store.chain(previous_id)
    if not chain:
        raise NotFound(
            f"Previous response with id {previous_id!r} not found: it was deleted, made with "
            "store: false, or never existed. Start without previous_response_id, or send the "
            "whole conversation as input.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return chain


def _plan(
    current: Assistant, body: ResponsesRequest, chain: list[StoredTurn], items: list[dict]
) -> Plan:
    """Choose the reply's path and set it up (each 4xx is raised here, before any turn is kept).

    The Assistant's one reply path: JSON output and tool calls plain; any prose reply of a
    steered role (the chat; with tools offered too) felt first, its verdict in the response's
    metadata; a reply to tool results unfelt, guarded all the same.
    """
    role = role_name(current, body.model)
    chosen = current.roles.get(role)
    seen = [*chain, pending_turn(items)]
    notes = [note for turn in seen for note in instruction_texts(turn.input_items)]
    options: dict[str, Any] = {
        "role": role,
        "instructions": join_instructions(body.instructions, *notes),
        "truncation": body.truncation,
        **body.sampling(),
    }
    text, history, answers_tools = _new_message(history_of(seen))
    json_format = body.json_format()
    choice = body.tool_choice_name()
    tools = body.tool_list() if choice != "none" else []
    if chosen.is_classifier:
        if tools or json_format is not None:
            param = "tools" if tools else "text.format"
            raise FieldError(param, f"not for role {role!r}: it answers with one of its labels.")
        return Plan(role, label_completion(current, text, role), [], None, None)
    verdict, completion = current.answer(
        text,
        history,
        steer=not answers_tools,  # tool results are no message of the user's to feel
        json_format=json_format,
        tools=tools,
        tool_choice=choice,
        **options,
    )
    return Plan(role, completion, tools, verdict, body.calls_kept())


def _new_message(history: list[Turn]) -> tuple[str, list[Turn], bool]:
    """The message to answer, the turns before it, and whether it is tool results.

    After function_call_output items the reply answers the results: they are the new message,
    written as Qwen2.5's chat template writes tool turns (one user turn of <tool_response>
    blocks), so the prompt is the one the template makes for them.
    """
    if not history:
        raise FieldError("input", "give a user message to answer.")
    if history[-1].role == "user":
        return history[-1].content, history[:-1], False
    if history[-1].role != "tool":
        raise FieldError("input", "end with a user message or function_call_output items.")
    start = len(history)
    while start > 0 and history[start - 1].role == "tool":
        start -= 1
    results = [f"<tool_response>\n{turn.content}\n</tool_response>" for turn in history[start:]]
    return "\n".join(results), history[:start], True


def _output(plan: Plan, text: str, message_id: str) -> list[dict[str, Any]]:
    """A finished reply's output items: its text as a message, and its calls when it made any."""
    status = item_status(plan.completion)
    content, calls = text, []
    if plan.tools and is_call(plan.completion):
        content, calls = split_tool_calls(plan.completion.reply_start + text, plan.tools)
        content = content if calls else text
    items = [output_message(message_id, content, status)] if content or not calls else []
    return items + [function_call_item(call) for call in calls[: plan.calls_kept]]


def _status(completion: Completion) -> Status:
    """The response's status: incomplete when cut by max_output_tokens or left unfinished."""
    return "completed" if completion.finish_reason not in (None, "length") else "incomplete"


async def _whole(
    request: Request, plan: Plan, shape: ResponseShape, keeper: Keeper
) -> dict[str, Any]:
    """The reply generated to its end (closed if the client leaves), then the Response."""
    message_id = new_id("msg_")
    try:
        text = await unless_gone(request, [plan.completion], plan.completion.text)
    except Exception:
        keeper.finish([], "failed", plan.completion)
        raise
    output = _output(plan, text, message_id)
    status = _status(plan.completion)
    await run_in_threadpool(keeper.finish, output, status, plan.completion)
    return shape.json(status, output, usage_of(plan.completion))


async def _stream(
    request: Request, plan: Plan, shape: ResponseShape, keeper: Keeper
) -> AsyncIterator[dict]:
    """created, in_progress, the output items' events, then completed (or incomplete when cut
    by max_output_tokens; failed with the error if generation broke). A client that leaves
    ends the stream and the turn is kept as incomplete, with the text so far."""
    emit = Events()
    message_id = new_id("msg_")
    texts: list[str] = []
    yield emit("response.created", response=shape.json("in_progress"))
    yield emit("response.in_progress", response=shape.json("in_progress"))
    try:
        if plan.tools and is_call(plan.completion):  # a call goes out whole once written
            text = await unless_gone(request, [plan.completion], plan.completion.text)
            texts.append(text)
            if plan.completion.finish_reason is None:
                return  # the client left
            output = _output(plan, text, message_id)
            for index, item in enumerate(output):
                for event in emit.whole_item(index, item):
                    yield event
        else:
            for event in emit.message_opened(0, message_id):
                yield event
            async for piece in pieces(request, plan.completion):
                texts.append(piece)
                yield emit.text_delta(0, message_id, piece)
            if plan.completion.finish_reason is None:
                return  # the client left: `pieces` closed the reply
            output = _output(plan, "".join(texts), message_id)
            for event in emit.message_closed(0, output[0]):
                yield event
        status = _status(plan.completion)
        await run_in_threadpool(keeper.finish, output, status, plan.completion)
        final = shape.json(status, output, usage_of(plan.completion))
        yield emit(
            "response.completed" if status == "completed" else "response.incomplete", response=final
        )
    except Exception as error:
        log.exception("%s reply failed mid-stream", request_id_of(request))
        keeper.finish([], "failed", plan.completion)
        failure = {"code": "server_error", "message": f"The reply failed: {error}"}
        yield emit("response.failed", response=shape.json("failed", error=failure))
    finally:
        # Left early (the client went away, or the task was cancelled): keep what was said.
        partial = "".join(texts)
        kept = [output_message(message_id, partial, "in_progress")] if partial else []
        keeper.finish(kept, "incomplete", plan.completion)


def _stored(store: ConversationStore, response_id: str) -> StoredTurn:
    turn = store.turn(response_id)
    if turn is None:
        raise _not_found(response_id)
    return turn


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id {response_id!r} not found (deleted, made with store: false, or "
        "never existed).",
        param="response_id",
    )
