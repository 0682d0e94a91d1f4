"""A reply being generated: the text stream, plus what a client of an API needs to know about it.

Why a type and not a bare iterator: an OpenAI client expects token counts (`usage`), why the
reply ended (`finish_reason`), and, when it asks, each token's log-probability. Those are only
known while or after the engine samples, so the engine writes them onto the `Completion` it
returns, and the caller reads them once the stream has ended. Iterating a `Completion` still
yields text pieces, so code that does `"".join(assistant.reply(...))` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Usage:
    """Tokens the engine really evaluated and sampled."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV state came from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token: its log-probability under the model's raw logits (before any sampling
    filter, as OpenAI and llama.cpp report it) and the most likely alternatives at that step."""

    token: str
    logprob: float
    bytes: bytes
    top: tuple[TokenLogprob, ...] = field(default=())


class Completion(Iterator[str]):
    """Iterate for the reply's text pieces; once it has ended, read `usage`, `finish_reason`
    and `logprobs` (one entry per sampled token, when they were asked for)."""

    def __init__(self, prompt_tokens: int, *, reply_start: str = "") -> None:
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None  # None until the stream has ended
        self.logprobs: list[TokenLogprob] = []
        # Text the reply was made to start with (it is in the prompt, not generated): a forced
        # tool call's opening tag.
        self.reply_start = reply_start
        self._pieces: Iterator[str] = iter(())
        self._text: list[str] = []
        self._logprobs_taken = 0
        # Set from any thread (a server whose client left): generation stops at the next token.
        self.cancelled = False
        self._earlier = Usage(0, 0, 0)  # prompts evaluated to decide how to reply (`counts`)
        # How the reply was decided, when a caller should see it (a tools request: call or prose).
        self.note: str | None = None

    def counts(self, prompt_tokens: int, cached_tokens: int) -> Completion:
        """Count in `usage` a prompt evaluated before this reply to decide it (a tools
        request's call-or-prose decision): its tokens were evaluated for this request too."""
        earlier = self._earlier
        self._earlier = Usage(
            earlier.prompt_tokens + prompt_tokens, 0, earlier.cached_tokens + cached_tokens
        )
        return self

    def run(self, pieces: Iterator[str]) -> Completion:
        """Attach the generator that fills this completion as it is iterated."""
        self._pieces = pieces
        return self

    def __next__(self) -> str:
        piece = next(self._pieces)
        self._text.append(piece)
        return piece

    def close(self) -> None:
        """Stop generating now (releases the model); the counts so far stay readable.

        Safe from another thread than the one iterating: generation then stops before its next
        token, and the iterating thread gets the end of the stream.
        """
        self.cancelled = True
        close = getattr(self._pieces, "close", None)
        if close is not None:
            # "generator already executing": another thread iterates it and will see the flag.
            with suppress(ValueError):
                close()

    def text(self) -> str:
        """The whole reply (generating the rest first)."""
        for _ in self:
            pass
        return "".join(self._text)

    @property
    def usage(self) -> Usage:
        earlier = self._earlier
        return Usage(
            self.prompt_tokens + earlier.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens + earlier.cached_tokens,
        )

    def new_logprobs(self) -> list[TokenLogprob]:
        """The log-probabilities of the tokens sampled since the last call (for streaming)."""
        fresh = self.logprobs[self._logprobs_taken :]
        self._logprobs_taken = len(self.logprobs)
        return fresh
