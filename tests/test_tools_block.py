"""Open WebUI's tools block on `allinone serve` at its defaults, for real.

Open WebUI with native function calling sends its 36 built-in tools (~26,000 characters of JSON
schemas, ~6,700 tokens here) with every chat completion. At the old 2048-token context every
message failed; serve now holds 8192 tokens, and the tools block sits in the system turn, so it
is part of the prompt's cached prefix: decoded once, then reused for each new message.
tests/data/openwebui_tools.json is shaped like those tools (OpenAI's `tools` format).

One server for the module, started as a user would (only --model, --port and --seed given); the
first request meets the tools block cold, which takes minutes on a busy two-core machine.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.test_server import start_server

pytestmark = pytest.mark.model

TOOLS = json.loads((ROOT / "tests" / "data" / "openwebui_tools.json").read_text("utf-8"))
PROPERTIES = {t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in TOOLS}
# Qwen's tokenizer reads this English JSON at ~3.9 characters a token: 5 is a safe floor.
TOOLS_TOKENS_AT_LEAST = len(json.dumps(TOOLS)) // 5
TIMEOUT = 1800  # the cold tools block alone took ~5 minutes with other jobs on the 2 cores
FINISHES = {"stop", "length", "tool_calls"}


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("tools-block") / "server.log"
    process, base = start_server(model_path, log_path)
    yield base, log_path
    process.terminate()
    process.wait(timeout=30)


def request(message: str, **extra: Any) -> dict[str, Any]:
    """A chat completion body as Open WebUI sends it: the user's message and the 36 tools."""
    body = {"model": "allinone", "messages": [{"role": "user", "content": message}]}
    return {**body, "tools": TOOLS, **extra}


def streamed(base: str, message: str) -> dict[str, Any]:
    """A streamed completion with its usage: what the chunks said, read to [DONE]."""
    body = request(message, stream=True, stream_options={"include_usage": True})
    result: dict[str, Any] = {"content": "", "tool_calls": [], "finish": None, "usage": None}
    result["done"] = False
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=TIMEOUT) as r:
        assert r.status_code == 200, r.read()
        result["decision"] = r.headers.get("X-AllInOne-Tools", "")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                result["done"] = True
                continue
            chunk = json.loads(data)
            assert "error" not in chunk, chunk
            result["usage"] = chunk.get("usage") or result["usage"]
            for choice in chunk["choices"]:
                delta = choice["delta"]
                result["content"] += delta.get("content") or ""
                result["tool_calls"] += delta.get("tool_calls") or []
                result["finish"] = choice["finish_reason"] or result["finish"]
    return result


@pytest.fixture(scope="module")
def two_messages(served):
    """The first message meets the tools block cold; the second, a new one, finds it cached."""
    base, _ = served
    return streamed(base, "今天是几号？"), streamed(base, "帮我记住：我喜欢喝绿茶。")


@pytest.fixture(scope="module")
def required_call(served, two_messages):
    """tool_choice "required": the reply is a call, generated on the whole tools prompt."""
    body = request("帮我记住：我喜欢喝绿茶。", tool_choice="required", max_tokens=200)
    response = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def answered(text: str, calls: list[dict[str, Any]]) -> bool:
    return bool(text.strip()) or bool(calls)


def assert_valid_call(call: dict[str, Any]) -> None:
    """A call names one of the tools, its arguments a JSON object of that tool's parameters."""
    name = call["function"]["name"]
    assert name in PROPERTIES, name
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments, dict) and set(arguments) <= PROPERTIES[name], arguments


def test_the_fixture_is_the_size_of_open_webuis_tools_block():
    assert len(TOOLS) == 36 and len(PROPERTIES) == 36
    assert 24_000 <= len(json.dumps(TOOLS)) <= 28_000


def test_a_streamed_request_with_the_36_tools_answers(two_messages):
    for result in two_messages:
        assert result["done"], "the stream did not end with [DONE]"
        assert result["finish"] in FINISHES
        assert answered(result["content"], result["tool_calls"]), result
        for call in result["tool_calls"]:
            assert_valid_call(call)
        # The call-or-prose decision, sent back so a client need not guess.
        decided = "call" if result["tool_calls"] else "prose"
        assert result["decision"].startswith(f"36 tools offered; {decided}"), result


def test_a_new_message_finds_the_tools_block_cached(two_messages):
    first, second = (result["usage"] for result in two_messages)
    # The tools block is in the prompt and counted (the call-or-prose decision reads it too).
    assert first["prompt_tokens"] >= TOOLS_TOKENS_AT_LEAST, first
    assert second["prompt_tokens"] >= TOOLS_TOKENS_AT_LEAST, second
    # Only the new message and the template's tail are decoded again.
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert 0.9 * second["prompt_tokens"] <= cached < second["prompt_tokens"], second


def test_a_cold_tools_block_is_not_reported_as_cached(two_messages):
    usage = two_messages[0]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"] / 2, usage


def test_a_non_streamed_request_with_the_36_tools_answers(served, two_messages):
    response = httpx.post(
        served[0] + "/v1/chat/completions",
        json=request("最近总是睡不好，怎么办？"),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] in FINISHES
    message = choice["message"]
    assert answered(message.get("content") or "", message.get("tool_calls") or []), message
    for call in message.get("tool_calls") or []:
        assert_valid_call(call)
    usage = body["usage"]
    assert usage["prompt_tokens"] >= TOOLS_TOKENS_AT_LEAST, usage
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 0.9 * usage["prompt_tokens"]


def test_a_required_call_is_one_of_the_tools_with_its_parameters(required_call):
    choice = required_call["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["tool_calls"], choice
    for call in choice["message"]["tool_calls"]:
        assert_valid_call(call)
    assert required_call["usage"]["prompt_tokens"] >= TOOLS_TOKENS_AT_LEAST


def test_what_auto_does_with_a_message_that_once_got_garbage_arguments(served, two_messages):
    """Before the call-or-prose decision, this message got a bare JSON "call" to
    get_current_timestamp whose arguments were its schema; now the reply is either prose or a
    call bound by the tools' grammar, never a call with arguments the tool does not take."""
    body = request("What is the current Unix timestamp? Use the tool.", max_tokens=120)
    response = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    if calls:
        assert choice["finish_reason"] == "tool_calls"
        for call in calls:
            assert_valid_call(call)
    else:
        assert choice["finish_reason"] in {"stop", "length"}
        assert choice["message"]["content"].strip()


def test_the_log_says_how_each_tools_request_went_and_shows_no_traceback(
    served, two_messages, required_call
):
    log = served[1].read_text(encoding="utf-8")
    # tool_choice auto: the call-or-prose decision, one line a request.
    assert log.count("tools request: 36 tools offered;") >= 2, log
    # A reply on the whole tools prompt (the required call) does not fit a 2048-cell slot:
    # it is generated alone on the engine's context, and says so.
    assert "does not fit a slot (2048 cells)" in log, log
    assert "Traceback" not in log, log
