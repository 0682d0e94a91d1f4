"""What the roles layer needs from an engine: the real one (app/llm), or a scripted fake in tests.

Written down as a Protocol so that every part of the roles layer asks for the same surface, and
the tests' FakeEngine (tests/conftest.py) can stand in for the model wherever the real one goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from app.llm import Completion, Prompt, Sampling


class EngineLike(Protocol):
    """What the dispatcher needs from an engine (the real one, or a scripted fake in tests)."""

    n_ctx: int
    model_name: str
    n_layer: int
    middle_layers: range
    supports_tools: bool  # the model's chat template has a tools section

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...
    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]: ...
    def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        prefix_messages: int = 0,
        lead: str = "",
        base_messages: int = 0,
        tools: Sequence[dict[str, Any]] = (),
        reply_start: str = "",
    ) -> Prompt: ...
    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None: ...
    def holds_prefix(self, prompt: Prompt) -> bool: ...
    def offer_prefix_state(self, prompt: Prompt, state: bytes) -> bool: ...
    def prefix_state(self, prompt: Prompt) -> bytes: ...
    def choose(
        self, prompt: Prompt, labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> tuple[list[float], Any]: ...
    def choose_many(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> list[tuple[list[float], Any]]: ...
    def read_states(self, prompt: Prompt, layers: Sequence[int]) -> np.ndarray: ...
    def read_states_many(
        self, prompts: Sequence[Prompt], layers: Sequence[int]
    ) -> list[np.ndarray]: ...
    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str: ...
    def opening_probability(self, prompt: Prompt, openings: Sequence[str]) -> tuple[float, int]: ...
    def stream(
        self, prompt: Prompt, sampling: Sampling, *, reply_start: str = ""
    ) -> Completion: ...
