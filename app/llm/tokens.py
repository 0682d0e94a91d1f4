"""Text to tokens and back, and the token sequences that can write a phrase (for bans)."""

from __future__ import annotations

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

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]:
        """Token sequences that write any of `phrases`: each one's own tokenization, plus every
        single token whose text contains it (e.g. 很开心 for 开心). For app/llm/bans.py."""
        missing = [phrase for phrase in phrases if phrase and phrase not in self._phrase_tokens]
        if missing:
            pieces = [self.piece(token) for token in range(self.n_vocab)]  # ~0.2 s, once
            for phrase in missing:
                wanted = phrase.encode("utf-8")
                found = {tuple(self.tokenize(phrase))}
                found |= {(token,) for token, piece in enumerate(pieces) if wanted in piece}
                self._phrase_tokens[phrase] = sorted(found)
        return [seq for phrase in phrases if phrase for seq in self._phrase_tokens[phrase]]
