"""OpenAI's Responses API shapes: the request, its input items, the Response object, its events.

Why a module of its own: the Responses API names things its own way (`input` items, `text.format`,
flat function tools, typed stream events with sequence numbers), but the rule is the chat
endpoint's (app/server/openai_api.py): every field a client sends is honoured or refused with a
400 naming it; the few accepted and ignored are listed in `IGNORED` with the reason
(docs/openai-api.md shows them). Items are kept in the store in these same shapes
(app/roles/store.py), so a stored turn is served back as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import InputError
from app.llm import Completion
from app.roles.conversations import message_item, message_text
from app.roles.json_output import JsonFormat
from app.roles.store import StoredTurn, new_id
from app.roles.tools import Tool, ToolCall, check_name, check_plain_text, tool_from_openai
from app.server.openai_api import FieldError

# Accepted and ignored, with the reason (shown in docs/openai-api.md).
IGNORED = {
    "include": "asks for extra output (logprobs, encrypted reasoning, search results): none here",
    "metadata": "a client's tags are not kept; the response's metadata carries the mood verdict",
    "user": "an end-user id for OpenAI's abuse monitoring; nothing is monitored here",
    "safety_identifier": "the same as user",
    "service_tier": "one local model, one tier",
    "prompt_cache_key": "the local prefix cache is always on, keyed by the prompt itself",
    "prompt_cache_retention": "the same as prompt_cache_key",
    "reasoning": "null or with every field null: nothing to set on a model that does not reason",
    "text.verbosity": '"medium" only, the default: other values are refused',
    "stream_options.include_obfuscation": "padding against network side channels; loopback",
    "tools[].strict": "a forced call is decoded under its schema's grammar anyway",
    "input[].id, input[].status": "an earlier item's fields, sent back with it",
}
# Fields this server refuses when they ask for something, with the reason.
REFUSED = {
    "background": "a response is generated while its request is open; no background jobs",
    "conversation": "OpenAI's Conversations API is not served; chain with previous_response_id",
    "prompt": "there are no stored prompt templates here; send instructions and input",
    "reasoning": "not a reasoning model",
    "top_logprobs": "log-probabilities come from /v1/chat/completions (logprobs, top_logprobs)",
    "prompt_cache_options": "the local prefix cache has no options",
    "context_management": "nothing is compacted on the server; truncation drops the oldest turns",
}
_TOOL_FIELDS = {"type", "name", "description", "parameters", "strict"}
_ITEM_FIELDS = {
    "message": {"type", "role", "content", "id", "status", "phase"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
}
_TEXT_PARTS = {"input_text", "output_text", "text", "refusal"}
_ROLES = ("user", "assistant", "system", "developer")


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextFormat(_Forbid):
    type: Literal["text", "json_object", "json_schema"]
    name: str = Field(default="", max_length=64)
    description: str = ""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Forbid):
    format: TextFormat | None = None
    verbosity: str | None = None


class StreamOptions(_Forbid):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Forbid):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1)
    store: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # OpenAI's default is "disabled"; here a long conversation drops its oldest turns instead of
    # failing, and "disabled" is OpenAI's 400 (context_length_exceeded) when it does not fit.
    truncation: Literal["auto", "disabled"] = "auto"
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    # Accepted and ignored (see IGNORED).
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    # Refused when they ask for something (see REFUSED).
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    reasoning: dict[str, Any] | None = None
    top_logprobs: int | None = None
    prompt_cache_options: Any = None
    context_management: Any = None

    def check_supported(self) -> None:
        """Refuse, naming the field, what this server cannot do (pydantic checked the types)."""
        for name, reason in REFUSED.items():
            value = getattr(self, name)
            if name == "reasoning" and value is not None:
                value = {key: part for key, part in value.items() if part is not None}
            if value not in (None, False, 0, {}, []):
                raise FieldError(name, f"not supported: {reason}.")
        verbosity = self.text.verbosity if self.text else None
        if verbosity not in (None, "medium"):
            raise FieldError("text.verbosity", "not supported: not a reasoning model.")
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "only with stream: true.")

    def sampling(self) -> dict[str, object]:
        """The options the reply takes (None: the role's own setting)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_output_tokens,
        }

    def json_format(self) -> JsonFormat | None:
        chosen = self.text.format if self.text else None
        if chosen is None or chosen.type == "text":
            return None
        if chosen.type == "json_object":
            return JsonFormat.any_object()
        if chosen.schema_ is None:
            raise FieldError("text.format.schema", "give the JSON Schema the answer must match.")
        return JsonFormat.from_schema(
            chosen.schema_,
            name=chosen.name,
            description=chosen.description,
            path="text.format.schema",
        )

    def tool_list(self) -> list[Tool]:
        return [_function_tool(spec, f"tools[{i}]") for i, spec in enumerate(self.tools or [])]

    def tool_choice_name(self) -> str:
        """ "auto", "none", "required", or the name of the function to call."""
        choice = self.tool_choice if self.tool_choice is not None else "auto"
        if isinstance(choice, str):
            if choice not in ("auto", "none", "required"):
                raise FieldError("tool_choice", "use auto, none, required or a function.")
            name = choice
        elif choice.get("type") == "function" and isinstance(choice.get("name"), str):
            name = choice["name"]
        else:
            raise FieldError(
                "tool_choice", 'use auto, none, required or {"type": "function", "name": ...}.'
            )
        if name not in ("auto", "none") and not self.tools:
            raise FieldError("tool_choice", f"{name!r} needs tools to choose from.")
        return name

    def calls_kept(self) -> int | None:
        """How many of the model's calls to answer with (None: all of them)."""
        limits = [self.max_tool_calls] if self.max_tool_calls else []
        if self.parallel_tool_calls is False:
            limits.append(1)
        return min(limits) if limits else None

    def echo(self) -> dict[str, Any]:
        """The request's settings as the Response object repeats them."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "truncation": self.truncation,
            "tools": self.tools or [],
            "tool_choice": self.tool_choice if self.tool_choice is not None else "auto",
            "parallel_tool_calls": self.parallel_tool_calls is not False,
            "max_tool_calls": self.max_tool_calls,
            "text": self.text.model_dump(by_alias=True, exclude_none=True)
            if self.text and self.text.format
            else {"format": {"type": "text"}},
            "store": self.store,
            "user": self.user,
        }


def _function_tool(spec: dict[str, Any], where: str) -> Tool:
    """One Responses function tool ({"type": "function", "name", "parameters", ...})."""
    kind = spec.get("type")
    if kind != "function":
        raise FieldError(
            f"{where}.type",
            f"{kind!r} tools are not supported: only function tools (no web search, file "
            "search, computer use or other built-in tool runs here).",
        )
    for key in sorted(set(spec) - _TOOL_FIELDS):
        if spec[key] is not None:
            raise FieldError(f"{where}.{key}", "not supported on a function tool.")
    name = spec.get("name")
    if not isinstance(name, str):
        raise FieldError(f"{where}.name", "give the function's name.")
    _checked(check_name, name, f"{where}.name")
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    JsonFormat.from_schema(parameters, path=f"{where}.parameters")  # enforceable?
    function = {"name": name, "parameters": parameters, "description": spec.get("description")}
    return tool_from_openai({"type": "function", "function": function}, where)


# -- input items ------------------------------------------------------------------------------


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as items in the store's shapes, each with an id."""
    if isinstance(value, str):
        return [_message("user", value, None)]
    if not value:
        raise FieldError("input", "give a text or a non-empty list of items.")
    return [_item(raw, f"input[{index}]") for index, raw in enumerate(value)]


def _item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    kind = raw.get("type", "message")
    allowed = _ITEM_FIELDS.get(kind)
    if allowed is None:
        raise FieldError(
            f"{where}.type",
            f"{kind!r} items are not supported: send message, function_call and "
            "function_call_output items (images, files and built-in tools' items: this model "
            "reads text and calls functions only).",
        )
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise FieldError(f"{where}.{unknown[0]}", "unknown field for this item type.")
    if kind == "message":
        role = raw.get("role")
        if role not in _ROLES:
            raise FieldError(f"{where}.role", "use user, assistant, system or developer.")
        return _message(role, _content_text(raw.get("content"), f"{where}.content"), raw.get("id"))
    call_id = _string(raw, "call_id", where)
    if kind == "function_call_output":
        output = raw.get("output")
        text = output if isinstance(output, str) else _content_text(output, f"{where}.output")
        return _with_id({"type": kind, "call_id": call_id, "output": text}, raw.get("id"), "fco_")
    name, arguments = _string(raw, "name", where), _string(raw, "arguments", where)
    _checked(check_name, name, f"{where}.name")
    _checked(check_plain_text, arguments, f"{where}.arguments")
    try:
        json.loads(arguments)
    except json.JSONDecodeError:
        raise FieldError(f"{where}.arguments", "must be JSON text.") from None
    call = {"type": kind, "call_id": call_id, "name": name, "arguments": arguments}
    return _with_id(call, raw.get("id"), "fc_")


def _checked(check: Callable[[str, str], None], value: str, where: str) -> None:
    """A check of app/roles/tools.py, its refusal naming the field."""
    try:
        check(value, where)
    except InputError as error:
        raise FieldError(where, str(error).removeprefix(f"{where}: ")) from None


def _message(role: str, text: str, given_id: Any) -> dict[str, Any]:
    return _with_id(message_item(role, text), given_id, "msg_")


def _with_id(item: dict[str, Any], given_id: Any, prefix: str) -> dict[str, Any]:
    item_id = given_id if isinstance(given_id, str) and given_id else new_id(prefix)
    return {"id": item_id, **item, "status": "completed"}


def _string(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise FieldError(f"{where}.{key}", "give it as a string.")
    return value


def _content_text(content: Any, where: str) -> str:
    """A message's text: a string, or its text parts joined (this model reads no images)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise FieldError(where, "give a string or a list of input_text parts.")
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS:
            raise FieldError(f"{where}[{index}].type", "only text parts: this model reads text.")
    return message_text({"content": content})


def instruction_texts(items: list[dict[str, Any]]) -> list[str]:
    """The system and developer messages' texts, in order: instructions, not history."""
    return [
        message_text(item)
        for item in items
        if item.get("type", "message") == "message" and item.get("role") in ("system", "developer")
    ]


def pending_turn(items: list[dict[str, Any]]) -> StoredTurn:
    """This request's input as a turn not yet kept, so that `history_of` reads it by the same
    rules as the stored ones."""
    return StoredTurn("", "", None, time.time(), "in_progress", items, [])


# -- the Response object ----------------------------------------------------------------------


def verdict_metadata(verdict: dict[str, Any] | None) -> dict[str, str]:
    """The mood verdict as OpenAI metadata (string values): sentiment, sentiment_confidence."""
    if verdict is None:
        return {}
    return {"sentiment": str(verdict["label"]), "sentiment_confidence": str(verdict["confidence"])}


@dataclass
class ResponseShape:
    """What a Response object says whatever its state: its id, settings and metadata."""

    id: str
    model: str
    created_at: float = field(default_factory=time.time)
    instructions: str | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    echo: dict[str, Any] = field(default_factory=dict)

    def json(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        output = output or []
        cut = status == "incomplete" and any(i.get("status") == "incomplete" for i in output)
        return {
            "id": self.id,
            "object": "response",
            "created_at": int(self.created_at),
            "status": status,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "instructions": self.instructions,
            "model": self.model,
            "output": output,
            "previous_response_id": self.previous_response_id,
            "metadata": self.metadata,
            "usage": responses_usage(usage),
            "background": False,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            **{"temperature": None, "top_p": None, "truncation": "auto", "tools": []},
            **{"tool_choice": "auto", "parallel_tool_calls": True, "store": True},
            **{"text": {"format": {"type": "text"}}, "max_output_tokens": None},
            **self.echo,
        }


def stored_shape(turn: StoredTurn) -> ResponseShape:
    """A stored turn's Response settings (those not kept take OpenAI's defaults)."""
    return ResponseShape(
        id=turn.id,
        model=turn.model,
        created_at=turn.created_at,
        instructions=turn.instructions,
        previous_response_id=turn.previous_id,
        metadata=verdict_metadata(turn.verdict),
    )


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Responses usage shape, with the detail fields every client version reads."""
    if usage is None:
        return None
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    return {
        **usage,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def output_message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)] if text or status != "in_progress" else [],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "id": new_id("fc_"),
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def item_status(completion: Completion) -> str:
    """A finished reply's item status: cut by the token limit is incomplete; a reply whose
    client left before its end was never finished (in_progress)."""
    if completion.finish_reason is None:
        return "in_progress"
    return "incomplete" if completion.finish_reason == "length" else "completed"


def served_inputs(turn: StoredTurn) -> list[dict[str, Any]]:
    """A stored turn's input items as OpenAI serves them (see `_served`)."""
    return _served(turn.input_items, turn.id + "i", "completed")


def served_outputs(turn: StoredTurn) -> list[dict[str, Any]]:
    """A stored turn's output items as OpenAI serves them (see `_served`)."""
    status = turn.status if turn.status in ("completed", "incomplete") else "incomplete"
    return _served(turn.output_items, turn.id + "o", status)


def _served(items: list[dict[str, Any]], base: str, status: str) -> list[dict[str, Any]]:
    """Items with what OpenAI's shapes require: an id (made from the turn's, so that it is the
    same on every read) and a status, for items another shell kept without them."""
    prefixes = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_"}
    base = base.removeprefix("resp_")
    served = []
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        made = {"id": f"{prefixes.get(kind, 'item_')}{base}{index:03d}", "status": status}
        served.append({**made, "type": kind, **item})
    return served


# -- stream events ----------------------------------------------------------------------------


class Events:
    """Server-sent events in OpenAI's shape: `event: <type>`, data a JSON object with that
    `type` and a `sequence_number` counting from 0."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> dict[str, str]:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return {"event": kind, "data": json.dumps(data, ensure_ascii=False)}

    def message_opened(self, index: int, item_id: str) -> list[dict[str, str]]:
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return [
            self("response.output_item.added", output_index=index, item=_opened(item_id)),
            self("response.content_part.added", **where, part=output_text("")),
        ]

    def text_delta(self, index: int, item_id: str, piece: str) -> dict[str, str]:
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return self("response.output_text.delta", **where, delta=piece, logprobs=[])

    def message_closed(self, index: int, item: dict[str, Any]) -> list[dict[str, str]]:
        text = item["content"][0]["text"] if item["content"] else ""
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self("response.output_text.done", **where, text=text, logprobs=[]),
            self("response.content_part.done", **where, part=output_text(text)),
            self("response.output_item.done", output_index=index, item=item),
        ]

    def whole_item(self, index: int, item: dict[str, Any]) -> list[dict[str, str]]:
        """A finished output item's events, as if streamed in one piece."""
        if item["type"] == "message":
            text = item["content"][0]["text"] if item["content"] else ""
            events = self.message_opened(index, item["id"])
            if text:
                events.append(self.text_delta(index, item["id"], text))
            return events + self.message_closed(index, item)
        where = {"item_id": item["id"], "output_index": index}
        opened = {**item, "status": "in_progress", "arguments": ""}
        return [
            self("response.output_item.added", output_index=index, item=opened),
            self("response.function_call_arguments.delta", **where, delta=item["arguments"]),
            self("response.function_call_arguments.done", **where, arguments=item["arguments"]),
            self("response.output_item.done", output_index=index, item=item),
        ]


def _opened(item_id: str) -> dict[str, Any]:
    return output_message(item_id, "", "in_progress")
