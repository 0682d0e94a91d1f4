"""A prompt as the engine sees it: tokens, and how much of their start can be cached.

Why apart: the template renders it, the prefix cache, the label reads and the reply slots all
consume it, and none of them should have to import another to name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """Prompt tokens plus how many of them form a reusable prefix (system prompt, few-shots)."""

    tokens: list[int]
    prefix_len: int = 0
    base_len: int = 0  # a shorter start of the prefix that several prefixes share (chat only)

    @property
    def prefix(self) -> tuple[int, ...]:
        return tuple(self.tokens[: self.prefix_len])


def common_prefix(held: Sequence[int], wanted: Sequence[int]) -> int:
    """How many tokens two sequences share from their start (KV cells that can be kept)."""
    count = 0
    for have, want in zip(held, wanted, strict=False):
        if have != want:
            break
        count += 1
    return count
