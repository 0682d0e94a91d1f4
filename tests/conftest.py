"""Shared fixtures: a scripted fake engine for logic tests, the real model for integration tests.

The real model is loaded once per test session. If it is missing the tests FAIL with the download
command; a silent skip would let a broken setup look green.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from app.config import load_settings
from app.errors import InputTooLong, ModelNotFound
from app.llm import Prompt, Sampling
from app.llm.completion import Completion
from app.models import resolve_model_path
from app.roles.assistant import Assistant
from app.roles.prompts import load_roles

ROOT = Path(__file__).resolve().parent.parent


class FakeEngine:
    """Scripted stand-in for Engine: enqueue answers, then assert on what it was asked.

    Tokens are characters, so prompt sizes are easy to reason about in tests.
    """

    model_name = "Fake Model"

    n_layer = 24
    middle_layers = range(23)
    n_embd = 4  # a layer's "state" counts the text's characters into n_embd buckets
    hidden_size = 2 * n_embd  # width of the per-layer states: [last, mean], as the engine's

    def __init__(self, n_ctx: int = 2048) -> None:
        self.n_ctx = n_ctx
        self.choices: list[list[float]] = []
        self.replies: list[list[str]] = []
        self.calls: list[tuple[str, list[dict[str, str]]]] = []
        self.last_messages: list[dict[str, str]] = []
        self.prefixes: dict[tuple[int, ...], bytes] = {}  # prefix states offered from disk
        self.supports_tools = True
        self.last_tools: list[dict] = []
        self.last_prompt: Prompt | None = None
        self.call_chance = 0.0  # what opening_probability says of a tool call's opening tag

    def enqueue_choice(self, probabilities: list[float]) -> None:
        self.choices.append(probabilities)

    def enqueue_reply(self, pieces: list[str]) -> None:
        self.replies.append(pieces)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]:
        return [tuple(self.tokenize(phrase)) for phrase in phrases if phrase]

    def chat_prompt(
        self,
        messages: Sequence[dict],
        *,
        prefix_messages: int = 0,
        lead: str = "",
        base_messages: int = 0,
        tools: Sequence[dict] = (),
        reply_start: str = "",
    ) -> Prompt:
        self.last_messages = [dict(m) for m in messages]
        self.last_tools = list(tools)
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + reply_start
        prefix = "".join(f"<{m['role']}>{m['content']}" for m in messages[:prefix_messages])
        return Prompt(tokens=[ord(c) for c in text], prefix_len=len(prefix))

    def holds_prefix(self, prompt: Prompt) -> bool:
        return tuple(prompt.tokens[: prompt.prefix_len]) in self.prefixes

    def offer_prefix_state(self, prompt: Prompt, state: bytes) -> bool:
        self.prefixes[tuple(prompt.tokens[: prompt.prefix_len])] = state
        return True

    def prefix_state(self, prompt: Prompt) -> bytes:
        return b"kv:" + bytes(str(len(prompt.tokens[: prompt.prefix_len])), "ascii")

    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None:
        if len(prompt.tokens) + reserve > self.n_ctx:
            raise InputTooLong(f"{len(prompt.tokens) + reserve} > {self.n_ctx}")

    def choose(self, prompt: Prompt, labels: Sequence[str], *, layers=()):
        self.check_fits(prompt)
        self.calls.append(("choose", self.last_messages))
        probabilities = self.choices.pop(0) if self.choices else [1.0 / len(labels)] * len(labels)
        return probabilities, np.zeros((len(layers), self.hidden_size))

    def choose_many(self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers=()):
        return [self.choose(prompt, labels, layers=layers) for prompt in prompts]

    def read_states(self, prompt: Prompt, layers: Sequence[int]):
        """Per layer: [last, mean] where the "state" of a character counts it into one of
        n_embd buckets (texts sharing characters come out close; choose() gives zeros)."""
        self.check_fits(prompt)
        self.calls.append(("states", self.last_messages))
        text = prompt.tokens[prompt.prefix_len :] or prompt.tokens[-1:]
        mean = np.zeros(self.n_embd)
        for token in text:
            mean[token % self.n_embd] += 1 / len(text)
        return np.tile(np.concatenate([mean, mean]), (len(layers), 1))

    def read_states_many(self, prompts: Sequence[Prompt], layers: Sequence[int]):
        return [self.read_states(prompt, layers) for prompt in prompts]

    def opening_probability(self, prompt: Prompt, openings: Sequence[str]) -> tuple[float, int]:
        self.check_fits(prompt)
        self.calls.append(("opening", self.last_messages))
        return self.call_chance, 0

    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str:
        self.calls.append(("grammar", self.last_messages))
        return labels[0]

    def stream(self, prompt: Prompt, sampling: Sampling, *, reply_start: str = "") -> Completion:
        """The next scripted reply, one token per piece (the fake's tokens are pieces)."""
        self.check_fits(prompt)
        self.calls.append(("stream", self.last_messages))
        self.last_sampling = sampling
        self.last_prompt = prompt
        pieces = self.replies.pop(0) if self.replies else ["好的"]
        completion = Completion(len(prompt.tokens), reply_start=reply_start)

        def generate() -> Iterator[str]:
            for piece in pieces:
                completion.completion_tokens += 1
                yield piece
            completion.finish_reason = "stop"

        return completion.run(generate())


@pytest.fixture(scope="session", autouse=True)
def _conversations_stay_in_a_temporary_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """No test (nor a server or CLI process it starts) writes the user's own store: the
    default one is a temporary file unless a test gives --store / ALLINONE_STORE itself."""
    saved = os.environ.get("ALLINONE_STORE")
    os.environ["ALLINONE_STORE"] = str(tmp_path_factory.mktemp("store") / "conversations.sqlite3")
    yield
    if saved is None:
        os.environ.pop("ALLINONE_STORE", None)
    else:
        os.environ["ALLINONE_STORE"] = saved


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_is_delivered() -> None:
    """A shell without job control starts a background command with SIGINT ignored (POSIX), and
    child processes inherit that: the tests of Ctrl-C need it delivered, however pytest began."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_assistant(fake_engine: FakeEngine, tmp_path: Path) -> Assistant:
    """The shipped roles on the fake engine. Without their learned heads: the fake has no real
    logits to feed a head, so its scripted probabilities are what the verdict must show.
    Its caches (the example bank's vectors) go to a temporary folder, not the user's."""
    roles = load_roles(ROOT / "prompts.yaml")
    settings = load_settings(cache_dir=tmp_path / "cache")
    assistant = Assistant(fake_engine, roles.model_copy(update={"heads": {}}), settings)
    assistant.prepare_bank()  # now, so the choices a test scripts are for its own calls
    fake_engine.calls.clear()
    return assistant


def _model_path() -> Path:
    try:
        return resolve_model_path(load_settings())
    except ModelNotFound as error:
        pytest.fail(
            f"{error}\nThe integration tests need the real model: run `allinone download` first.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def model_path() -> Path:
    return _model_path()


@pytest.fixture(scope="session")
def assistant(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Assistant:
    """The real model, loaded once for the whole session (greedy, so answers are repeatable).
    Its cache folder starts empty, so the example bank is really read by the model here."""
    cache = tmp_path_factory.mktemp("cache")
    return Assistant.load(model=model_path, seed=1234, cache_dir=cache)


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `allinone ARGS...` as a real process (the installed code, a fresh interpreter)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def shipped_prompts_text() -> str:
    return (ROOT / "prompts.yaml").read_text(encoding="utf-8")


def copy_prompts(folder: Path, text: str | None = None) -> Path:
    """A prompts file in `folder` (the shipped one unless `text` is given) with the learned heads
    and the example bank it points at beside it, as they are beside the shipped file."""
    shutil.copytree(ROOT / "heads", folder / "heads", dirs_exist_ok=True)
    shutil.copytree(ROOT / "banks", folder / "banks", dirs_exist_ok=True)
    return write(folder / "prompts.yaml", shipped_prompts_text() if text is None else text)
