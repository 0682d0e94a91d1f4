"""Tool calls (OpenAI `tools`) the way the model's own chat template does them.

Qwen2.5's template lists the functions in its system turn and teaches the model to answer a call
as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. With tool_choice "auto" the model
decides, and any such blocks are read out of its text afterwards: a 0.5B model often answers in
prose instead, or writes a call that does not parse (then it stays text). With "required" or a
named function, the assistant's turn is made to start with the opening tag and the call is decoded
under a grammar built from the parameters' JSON Schema (app/roles/json_output.py): it always parses
and matches. A template without a tools section cannot show the model any tool: refused.

Tools and earlier calls are template text (tokenized with special tokens on), so text that could
forge a control token (`<|im_end|>`) is refused rather than passed on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InputError
from app.roles.json_output import JsonFormat

CALL_OPEN = "<tool_call>\n"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_CONTROL = "<|"


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    description: str = ""

    def spec(self) -> dict[str, Any]:
        """As the chat template wants it (OpenAI's shape)."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made; `arguments` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def template_form(self) -> dict[str, Any]:
        """As the chat template renders an earlier call (arguments as an object)."""
        return {"type": "function", "function": {"name": self.name, "arguments": _args(self)}}


def tool_from_openai(spec: Any, where: str) -> Tool:
    """Check one OpenAI tool spec ({"type": "function", "function": {...}}), naming `where`."""
    if not isinstance(spec, dict) or spec.get("type") != "function":
        raise InputError(f"{where}.type: only function tools are supported.")
    function = spec.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InputError(f"{where}.function: give an object with a name.")
    unknown = set(function) - {"name", "description", "parameters", "strict"}
    if unknown:
        raise InputError(f"{where}.function.{sorted(unknown)[0]}: unknown field.")
    check_name(function["name"], f"{where}.function.name")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    JsonFormat.from_schema(parameters, path=f"{where}.function.parameters")  # enforceable?
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise InputError(f"{where}.function.description: must be a string.")
    tool = Tool(function["name"], parameters, description)
    check_plain_text(json.dumps(tool.spec(), ensure_ascii=False), where)
    return tool


def check_name(name: str, where: str) -> None:
    if not _NAME.match(name):
        raise InputError(f"{where}: use 1-64 letters, digits, '_' or '-'.")


def check_plain_text(text: str, where: str) -> None:
    """Refuse text that would be read as the model's control tokens inside the template."""
    if _CONTROL in text:
        raise InputError(f"{where}: '{_CONTROL}' is not allowed here (it reads as control text).")


def call_format(tools: Sequence[Tool], name: str | None = None) -> JsonFormat:
    """The grammar of one call: to the function `name`, or to any of `tools`."""
    chosen = [tool for tool in tools if name is None or tool.name == name]
    if not chosen:
        raise InputError(f"tool_choice: no tool named {name!r} in tools.")
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
        }
        for tool in chosen
    ]
    return JsonFormat.from_schema(calls[0] if len(calls) == 1 else {"anyOf": calls})


def split_tool_calls(text: str, tools: Sequence[Tool]) -> tuple[str, list[ToolCall]]:
    """The reply's text outside its calls, and the calls that parse and name a known tool.

    A block that does not parse, or calls a function not offered, stays in the text: the
    client sees what the model wrote instead of a call that would fail.
    """
    known = {tool.name for tool in tools}
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    for match in _CALL.finditer(text):
        call = _parse_call(match.group(1), known)
        if call is None:
            continue
        kept.append(text[position : match.start()])
        position = match.end()
        calls.append(call)
    kept.append(text[position:])
    return "".join(kept).strip(), calls


def _parse_call(body: str, known: set[str]) -> ToolCall | None:
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or call.get("name") not in known:
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(call["name"], json.dumps(arguments, ensure_ascii=False))


def _args(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments
