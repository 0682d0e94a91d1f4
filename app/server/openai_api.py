"""The OpenAI API's shapes for the server: requests in, JSON bodies and stream chunks out.

Why a module of its own: the rule "every field a client sends is honoured or refused, never
ignored" needs one place that lists them all. Request models forbid unknown fields (a 400 naming
the field); fields OpenAI defines that this server does not do are declared, so the refusal says
why; the few accepted and ignored are listed in `IGNORED` with the reason (docs/openai-api.md
shows it).
Part of the server shell: the core (app/roles/assistant.py) knows nothing of this.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.errors import InputError
from app.llm import Completion, TokenLogprob, Usage
from app.roles.assistant import Assistant, Turn
from app.roles.json_output import JsonFormat
from app.roles.tools import (
    Tool,
    ToolCall,
    check_name,
    check_plain_text,
    split_tool_calls,
    tool_from_openai,
)

ROLE_ALIAS = "allinone:"  # a model name that picks a role: "allinone:sentiment"
MAX_N = 8  # choices are generated one after another on the one model
MAX_TOP_LOGPROBS = 20  # as OpenAI

# Accepted and ignored, with the reason (shown in docs/openai-api.md).
IGNORED = {
    "user": "an end-user id for OpenAI's abuse monitoring; nothing is monitored here",
    "safety_identifier": "the same as user",
    "metadata": "tags for OpenAI's stored completions; nothing is stored here",
    "store": "nothing is stored here",
    "service_tier": "one local model, one tier",
    "prompt_cache_key": "the local prefix cache is always on, keyed by the prompt itself",
    "prompt_cache_retention": "the same as prompt_cache_key",
    "parallel_tool_calls": "true is what happens anyway; false keeps only the first call",
    "stream_options.include_obfuscation": "padding against network side channels; loopback",
    "messages[].name": "the chat template has no place for a participant's name",
    "messages[].refusal, messages[].annotations": "an earlier answer's fields sent back",
}
# Fields of OpenAI's API this server refuses when they ask for something, with the reason.
REFUSED = {
    "logit_bias": "token ids are another tokenizer's; this model's ids differ",
    "audio": "this model reads and writes text only",
    "modalities": "this model writes text only",
    "prediction": "predicted outputs are not implemented",
    "functions": "deprecated by OpenAI; use tools",
    "function_call": "deprecated by OpenAI; use tool_choice",
    "reasoning_effort": "not a reasoning model",
    "verbosity": "not a reasoning model",
    "web_search_options": "no web access",
    "moderation": "no moderation model here",
    "prompt_cache_options": "the local prefix cache has no options",
}


class FieldError(InputError):
    """A request field this server refuses; `param` names it for the error body."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionRef(_Forbid):
    name: str
    arguments: str = "{}"


class MessageToolCall(_Forbid):
    id: str
    type: Literal["function"] = "function"
    function: FunctionRef


class ChatMessage(_Forbid):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: Any = None


class StreamOptions(_Forbid):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class JsonSchemaFormat(_Forbid):
    name: str = Field(default="", max_length=64)
    description: str = ""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Forbid):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(_Forbid):
    model: str | None = None
    role: str | None = Field(default=None, description="A role from prompts.yaml.")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    stop: str | list[str] | None = Field(default=None, max_length=4)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_N)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Accepted and ignored (see IGNORED).
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    # Refused when they ask for something (see REFUSED).
    logit_bias: dict[str, Any] | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    functions: Any = None
    function_call: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None

    def check_supported(self) -> None:
        """Refuse, naming the field, what this server cannot do (pydantic checked the types)."""
        for name, reason in REFUSED.items():
            value = getattr(self, name)
            if name == "modalities" and value in (["text"], None):
                continue
            if value not in (None, {}, []):
                raise FieldError(name, f"not supported: {reason}.")
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "needs logprobs: true.")
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "only with stream: true.")
        if self.tool_choice is not None and not self.tools:
            raise FieldError("tool_choice", "only with tools.")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> dict[str, object]:
        """The options every choice shares (None: the role's own setting)."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "stop": tuple(stops) if stops else None,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_logprobs": (self.top_logprobs or 0) if self.logprobs else None,
        }

    def seeds(self, default: int | None) -> list[int | None]:
        """One seed per choice: consecutive from the request's (or the server's) seed, so the n
        choices differ; None lets each pick a fresh one. Repeats are best effort, as OpenAI's:
        a prompt decoded in other batch shapes (the prefix cache) rounds its logits apart."""
        base = self.seed if self.seed is not None else default
        return [None if base is None else base + index for index in range(self.n)]

    def json_format(self) -> JsonFormat | None:
        chosen = self.response_format
        if chosen is None or chosen.type == "text":
            return None
        if chosen.type == "json_object":
            return JsonFormat.any_object()
        spec = chosen.json_schema
        if spec is None or spec.schema_ is None:
            raise FieldError("response_format.json_schema", "give {name, schema}.")
        return JsonFormat.from_schema(
            spec.schema_,
            name=spec.name,
            description=spec.description,
            path="response_format.json_schema.schema",
        )

    def tool_list(self) -> list[Tool]:
        return [tool_from_openai(spec, f"tools[{i}]") for i, spec in enumerate(self.tools or [])]

    def tool_choice_name(self) -> str:
        """ "auto", "none", "required", or the name of the function to call."""
        choice = self.tool_choice if self.tool_choice is not None else "auto"
        if isinstance(choice, str):
            if choice not in ("auto", "none", "required"):
                raise FieldError("tool_choice", "use auto, none, required or a function.")
            return choice
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict):
            raise FieldError("tool_choice", 'use {"type": "function", "function": {"name"}}.')
        return str(function.get("name"))

    def refuse_for_labels(self, role: str) -> None:
        """What makes no sense for a label role, whose answer is the argmax over its labels."""
        why = f"role {role!r} answers with one of its labels, decided by their logits"
        if self.n > 1:
            raise FieldError("n", f"must be 1: {why} (the same every time).")
        if self.logprobs:
            raise FieldError("logprobs", f"not for {why}; /v1/sentiment gives the confidence.")
        if self.response_format is not None and self.response_format.type != "text":
            raise FieldError("response_format", f"not for {why}.")
        if self.tools:
            raise FieldError("tools", f"not for {why}.")


def join_instructions(*parts: str | None) -> str | None:
    """A client's instructions as one text, or None when it gave none.

    The rule on every endpoint: each role brings its own system prompt, and what a client says
    there (`instructions`, system and developer messages) is added after it, never instead of it.
    """
    texts = [part.strip() for part in parts if part and part.strip()]
    return "\n\n".join(texts) or None


def instructions_of(messages: list[ChatMessage]) -> str | None:
    """The text of the system and developer messages, in order (see `join_instructions`)."""
    return join_instructions(
        *(
            _text(message, f"messages[{index}]")
            for index, message in enumerate(messages)
            if message.role in ("system", "developer")
        )
    )


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """The last message is the user's new text; earlier user/assistant/tool turns are history.

    System and developer messages are not history: `instructions_of` reads them.
    """
    if messages[-1].role != "user":
        raise InputError("messages: the last message must come from the user.")
    history: list[Turn] = []
    for index, message in enumerate(messages[:-1]):
        where = f"messages[{index}]"
        for name in ("audio", "function_call"):
            if getattr(message, name) is not None:
                raise FieldError(f"{where}.{name}", f"not supported: {REFUSED[name]}.")
        if message.role in ("system", "developer"):
            continue
        calls = tuple(
            _call(call, f"{where}.tool_calls[{i}]")
            for i, call in enumerate(message.tool_calls or [])
        )
        history.append(Turn(message.role, _text(message, where), calls))
    return _text(messages[-1], f"messages[{len(messages) - 1}]"), history


def _text(message: ChatMessage, where: str) -> str:
    """A message's text: a string, or the text parts of a list (this model reads no images)."""
    content = message.content
    if content is None:
        if message.role == "assistant" and message.tool_calls:
            return ""
        raise FieldError(f"{where}.content", "give the message's text.")
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise FieldError(f"{where}.content[{index}]", "only text parts: this model reads text.")
        texts.append(part["text"])
    return "".join(texts)


def _call(call: MessageToolCall, where: str) -> ToolCall:
    check_name(call.function.name, f"{where}.function.name")
    check_plain_text(call.function.arguments, f"{where}.function.arguments")
    return ToolCall(call.function.name, call.function.arguments, call.id)


def role_name(current: Assistant, model: str | None, role: str | None = None) -> str:
    """The role asked for: `role`, else a model alias ("allinone:sentiment"), else the chat."""
    if role:
        return current.roles.get(role).name
    if model and model.startswith(ROLE_ALIAS):
        return current.roles.get(model.removeprefix(ROLE_ALIAS)).name
    return current.roles.defaults.chat


def label_completion(current: Assistant, text: str, role: str) -> Completion:
    """A label role's answer as a finished completion: its label, with tokens counted as for
    a reply (the prompt the engine evaluated, the label's tokens). Blocks: call it in a thread."""
    verdict = current.classify(text, role)
    prompt = current.prompt_for(current.roles.get(role), text)
    done = Completion(len(prompt.tokens)).run(iter([verdict.label]))
    done.completion_tokens = len(current.engine.tokenize(verdict.label))
    done.finish_reason = "stop"
    return done


# -- responses -------------------------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def total_usage(completions: list[Completion]) -> Usage:
    """The prompt once (every choice answers the same one), the tokens of all choices."""
    first = completions[0].usage
    sampled = sum(completion.completion_tokens for completion in completions)
    return Usage(first.prompt_tokens, sampled, first.cached_tokens)


def logprobs_json(entries: list[TokenLogprob]) -> dict[str, Any]:
    def one(entry: TokenLogprob) -> dict[str, Any]:
        return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}

    content = [{**one(entry), "top_logprobs": [one(alt) for alt in entry.top]} for entry in entries]
    return {"content": content, "refusal": None}


def is_call(completion: Completion) -> bool:
    """Whether a reply is a tool call: every call is written from the call's opening tag (a
    tools request decides call or prose first, app/roles/replying.py), so a reply that does
    not start with it is prose, streamed and shown as it is."""
    return bool(completion.reply_start)


def message_json(completion: Completion, tools: list[Tool], parallel: bool) -> tuple[dict, str]:
    """A finished choice's message and finish reason ("tool_calls" when it called tools)."""
    text = completion.text()
    if not tools or not is_call(completion):
        return {"role": "assistant", "content": text}, completion.finish_reason or "stop"
    content, calls = split_tool_calls(completion.reply_start + text, tools)
    if not calls:
        return {"role": "assistant", "content": text}, completion.finish_reason or "stop"
    calls = calls if parallel else calls[:1]
    message = {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ],
    }
    return message, "tool_calls"


def embedding_json(vector: np.ndarray, index: int, encoding: str) -> dict[str, Any]:
    data: Any = (
        base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        if encoding == "base64"
        else [float(x) for x in vector]
    )
    return {"object": "embedding", "index": index, "embedding": data}


class EmbeddingRequest(_Forbid):
    input: Any
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None  # accepted and ignored, as for chat

    def texts(self, limit: int) -> list[str]:
        if self.dimensions is not None:
            raise FieldError("dimensions", "not supported: the vectors have the model's width.")
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not isinstance(texts, list) or not texts:
            raise FieldError("input", "give a text or a non-empty list of texts.")
        if not all(isinstance(text, str) for text in texts):
            raise FieldError("input", "token-id inputs are not supported; send text.")
        if len(texts) > limit:
            raise FieldError("input", f"at most {limit} texts per request.")
        return texts


def chunk_json(
    meta: dict[str, Any],
    index: int,
    delta: dict[str, Any],
    finish: str | None,
    logprobs: list[TokenLogprob] | None = None,
) -> str:
    choice = {
        "index": index,
        "delta": delta,
        "finish_reason": finish,
        "logprobs": logprobs_json(logprobs) if logprobs is not None else None,
    }
    return json.dumps(
        {**meta, "object": "chat.completion.chunk", "choices": [choice]}, ensure_ascii=False
    )


def decision_headers(completions: Sequence[Completion]) -> dict[str, str]:
    """How a tools request was answered (call or prose, and why), as a response header: a
    client offering tools can see that the model chose prose rather than guess
    (app/roles/replying.py, `_call_or_prose`)."""
    notes = [completion.note for completion in completions if completion.note]
    return {"X-AllInOne-Tools": notes[0]} if notes else {}
