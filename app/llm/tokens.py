"""Text to tokens and back, and the token sequences that can write a phrase (for bans)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from llama_cpp import Llama

from app.llm.native import Vocab


class Tokenizer:
    """The loaded model's tokenizer."""

    def __init__(self, llm: Llama) -> None:
        self._llm = llm
        self.vocab = Vocab(llm)
        self.n_vocab = llm.n_vocab()
        self._phrase_tokens: dict[str, list[tuple[int, ...]]] = {}
        self._vocab_text: tuple[bytes, list[int]] | None = None  # see `_tokens_containing`

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]:
        """Token sequences that write any of `phrases`: each one's own tokenization, every
        single token whose text contains it (很开心 for 开心), and, split anywhere, the start
        (its own tokens, or any token that ends with it) followed by the rest (its own tokens,
        or any token that begins with it). Seen slipping past the tokenization alone: 你的 + 错误
        (你的错) and 是因为 + 你的 (因为你). For app/llm/bans.py."""
        for phrase in phrases:
            if phrase and phrase not in self._phrase_tokens:
                found = {tuple(self.tokenize(phrase))}
                found |= {(token,) for token in self._tokens_containing(phrase.encode("utf-8"))}
                for cut in range(1, len(phrase)):
                    start, rest = phrase[:cut], phrase[cut:]
                    own_start, own_rest = tuple(self.tokenize(start)), tuple(self.tokenize(rest))
                    ending = {(t,) for t in self._tokens_ending(start.encode("utf-8"))}
                    starting = {(t,) for t in self._tokens_starting(rest.encode("utf-8"))}
                    # Either side merged into a neighbour (真是太 + 棒 + 了 wrote 太棒了), but
                    # both only past a one-character start (是 ends too many tokens: 就是...).
                    found |= {(*s, *r) for s in ending | {own_start} for r in [own_rest]}
                    found |= {(*own_start, *r) for r in starting}
                    if cut > 1:
                        found |= {(*s, *r) for s in ending for r in starting}
                self._phrase_tokens[phrase] = sorted(found)
        return [seq for phrase in phrases if phrase for seq in self._phrase_tokens[phrase]]

    def _vocabulary_text(self) -> tuple[bytes, list[int]]:
        """All the vocabulary's texts joined by NULs, and where each starts: made once (~0.3 s),
        so a new phrase costs milliseconds, not a 0.06 s scan of 152k tokens (a reply of a new
        tone's 22 words waited 1.3 s for them)."""
        if self._vocab_text is None:
            pieces = [self.piece(token) for token in range(self.n_vocab)]
            starts = list(itertools.accumulate((len(piece) + 1 for piece in pieces), initial=0))
            self._vocab_text = (b"\0".join(pieces), starts)
        return self._vocab_text

    def _tokens_containing(self, wanted: bytes) -> set[int]:
        """Every token whose text contains `wanted`."""
        text, starts = self._vocabulary_text()
        return self._found(text, starts, wanted)

    def _tokens_ending(self, wanted: bytes) -> set[int]:
        """Every token whose text ends with `wanted` (found just before a separator)."""
        text, starts = self._vocabulary_text()
        last = {self.n_vocab - 1} if text.endswith(wanted) else set()
        return self._found(text, starts, wanted + b"\0") | last

    def _tokens_starting(self, wanted: bytes) -> set[int]:
        """Every token whose text begins with `wanted` (found just after a separator, which
        belongs to the token before)."""
        text, starts = self._vocabulary_text()
        first = {0} if text.startswith(wanted) else set()
        return {token + 1 for token in self._found(text, starts, b"\0" + wanted)} | first

    @staticmethod
    def _found(text: bytes, starts: list[int], wanted: bytes) -> set[int]:
        """The token in whose text (or separator after it) each occurrence of `wanted` starts."""
        tokens: set[int] = set()
        at = text.find(wanted)
        while at >= 0:
            tokens.add(bisect.bisect_right(starts, at) - 1)
            at = text.find(wanted, at + 1)
        return tokens
