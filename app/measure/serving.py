"""What a client of `allinone serve` waits for, on a real server process at serve's defaults.

- The tools block: Open WebUI with native function calling sends its 36 built-in tools (~26,000
  characters of JSON schemas, ~6,700 tokens) with every chat completion. The first request
  decodes them (cold); a new message after it finds them in the prefix cache. Measured: seconds
  to the first streamed piece of each, their prompt and cached tokens, and the server's RSS
  before and after (and its peak).
- A follow-up turn: a 3-turn conversation the server keeps (the Responses API, each turn naming
  the last by previous_response_id) against the same turns sent whole every time (store
  false): the first piece (median of FOLLOW_UP_ROUNDS runs each) and cached tokens of turns 2
  and 3.

The server is started as a user starts it: `allinone serve` with the bench's model settings but
serve's own context (8192; the bench's --ctx is for its in-process measures), its conversations
in a temporary store, never the user's. Only the standard library talks to it.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.errors import InputError

TOOLS_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "openwebui_tools.json"
TOOLS_MESSAGES = ("今天是几号？", "帮我记住：我喜欢喝绿茶。", "最近总是睡不好，怎么办？")
FOLLOW_UP = ("周末想出去走走，有什么建议吗？", "我住在杭州，预算不多。", "那要是下雨呢？")
FOLLOW_UP_ROUNDS = 3  # runs of each way, in the order kept, whole, whole, kept, kept, whole
PARTS = ("tools block", "follow-up turn")
# Settings the served measures keep as serve has them: its context, a store of their own.
SERVER_OWN = {"n_ctx", "store", "keep_days"}
TIMEOUT = 1800  # seconds for one request: a cold tools block took ~5 min on 2 busy cores


@dataclass(frozen=True)
class Timed:
    """One streamed request: seconds to its first piece and to its end, its token counts."""

    first_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    text: str = ""
    response_id: str = ""
    calls: int = 0  # tool calls in the reply


class Server:
    """`allinone serve` in a child process on a free loopback port, stopped on exit."""

    def __init__(self, settings: dict[str, object], folder: Path) -> None:
        env = {**os.environ, "ALLINONE_STORE": str(folder / "conversations.sqlite3")}
        env.pop("ALLINONE_N_CTX", None)
        for key, value in settings.items():
            if value is not None and key not in SERVER_OWN:
                env[f"ALLINONE_{key.upper()}"] = str(value)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.log = folder / "server.log"
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        with self.log.open("w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InputError(f"`allinone serve` failed in the benchmark: {self.last_line()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise InputError("`allinone serve` did not answer /health within 5 minutes.")

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def last_line(self) -> str:
        lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def memory_mb(self, field: str = "VmRSS") -> float:
        """The process's resident memory now (VmRSS) or at its peak (VmHWM), in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")  # not Linux

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[tuple[float, dict[str, Any]]]:
        """POST `body` with stream on; each server-sent event's data with its arrival time."""
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps({**body, "stream": True}).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:300]
            message = f"POST {path} answered {error.code} in the benchmark: {detail}"
            raise InputError(message) from None
        with response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if line.startswith("data:") and line != "data: [DONE]":
                    yield time.perf_counter(), json.loads(line.removeprefix("data:"))

    def chat(self, messages: list[dict[str, str]], **extra: Any) -> Timed:
        """A streamed chat completion (usage asked for); its first piece is the first chunk
        with content or tool calls."""
        body = {"model": "allinone", "messages": messages, **extra}
        body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        first, usage, text, calls = None, {}, "", 0
        for arrived, chunk in self.stream("/v1/chat/completions", body):
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                delta = choice["delta"]
                if delta.get("content") or delta.get("tool_calls"):
                    first = first or arrived
                    text += delta.get("content") or ""
                    calls += len(delta.get("tool_calls") or [])
        timed = _timed(started, first, usage.get("prompt_tokens"), usage, text)
        return Timed(**{**asdict(timed), "calls": calls})

    def respond(
        self, text: str, previous_id: str | None, history: list[dict[str, str]] | None = None
    ) -> Timed:
        """A streamed, greedy Responses API turn: after `previous_id` (kept by the server), or
        after `history` sent whole and not kept (store false)."""
        body: dict[str, Any] = {"model": "allinone", "input": text, "temperature": 0}
        if previous_id:
            body["previous_response_id"] = previous_id
        if history is not None:
            body["input"] = [*history, {"role": "user", "content": text}]
            body["store"] = False
        started = time.perf_counter()
        first, done, reply = None, {}, ""
        for arrived, event in self.stream("/v1/responses", body):
            if event.get("type") == "response.output_text.delta":
                first = first or arrived
                reply += event["delta"]
            elif event.get("type") in ("response.completed", "response.incomplete"):
                done = event["response"]
        usage = done.get("usage") or {}
        timed = _timed(started, first, usage.get("input_tokens"), usage, reply)
        return Timed(**{**asdict(timed), "response_id": done.get("id", "")})


def _timed(
    started: float, first: float | None, prompt: int | None, usage: dict, text: str
) -> Timed:
    if prompt is None:
        raise InputError("The server's stream ended without its usage in the benchmark.")
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    ended = time.perf_counter()
    return Timed(
        (first or ended) - started, ended - started, prompt, details.get("cached_tokens", 0), text
    )


# -- the two measures --------------------------------------------------------------------------


def tools_block(server: Server) -> dict[str, Any]:
    """The 36 tools with a first message (cold), then with new messages (the block cached)."""
    tools = json.loads(TOOLS_FILE.read_text(encoding="utf-8"))
    before = server.memory_mb()

    def ask(message: str) -> Timed:
        return server.chat([{"role": "user", "content": message}], tools=tools)

    cold = ask(TOOLS_MESSAGES[0])
    cached = [ask(message) for message in TOOLS_MESSAGES[1:]]
    return {
        "tools": len(tools),
        "tools_chars": len(json.dumps(tools)),
        "cold": asdict(cold),
        "cached": [asdict(timed) for timed in cached],
        "cached_first_s": statistics.median(timed.first_s for timed in cached),
        "rss_before_mb": before,
        "rss_after_mb": server.memory_mb(),
        "rss_peak_mb": server.memory_mb("VmHWM"),
    }


def follow_up(server: Server, rounds: int = FOLLOW_UP_ROUNDS) -> dict[str, Any]:
    """Turns 2 and 3 of a conversation kept by the server (previous_response_id) against the
    same conversation sent whole each time (the same Responses path, store false).

    Fair by construction: the same words and greedy replies, so both ways build the same
    prompts; a first conversation, not counted, has the server feel every message once (a
    verdict is kept, which would favour whichever way ran second); then the ways alternate
    (kept, whole, whole, kept, ...) and each turn's first piece is the median of its runs."""
    conversation(server, kept=False)  # the warm-up
    runs: dict[str, list[list[Timed]]] = {"responses": [], "stateless": []}
    for index in range(2 * rounds):
        kept = index % 4 in (0, 3)
        runs["responses" if kept else "stateless"].append(conversation(server, kept=kept))
    return {
        "turns": len(FOLLOW_UP),
        "rounds": rounds,
        **{
            way: [_median_turn([run[turn] for run in done]) for turn in range(len(FOLLOW_UP))]
            for way, done in runs.items()
        },
        "first_s": {
            way: [[run[turn].first_s for run in done] for turn in range(len(FOLLOW_UP))]
            for way, done in runs.items()
        },
    }


def conversation(server: Server, *, kept: bool) -> list[Timed]:
    """FOLLOW_UP's turns, greedy: each after the last by its id (kept), or after the whole
    history sent again and not kept (store false)."""
    turns: list[Timed] = []
    history: list[dict[str, str]] = []
    for message in FOLLOW_UP:
        if kept:
            turn = server.respond(message, turns[-1].response_id if turns else None)
        else:
            turn = server.respond(message, None, history)
        turns.append(turn)
        history += [
            {"role": "user", "content": message},
            {"role": "assistant", "content": turn.text},
        ]
    return turns


def _median_turn(runs: list[Timed]) -> dict[str, Any]:
    """One turn over its runs: the median first piece and end, the last run's token counts."""
    return {
        **asdict(runs[-1]),
        "first_s": statistics.median(run.first_s for run in runs),
        "total_s": statistics.median(run.total_s for run in runs),
    }


def run(settings: dict[str, object], parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """The named parts on one server process: {"tools block": ..., "follow-up turn": ...}."""
    measures = {"tools block": tools_block, "follow-up turn": follow_up}
    with tempfile.TemporaryDirectory() as folder, Server(settings, Path(folder)) as server:
        return {part: measures[part](server) for part in parts}
