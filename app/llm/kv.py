"""The engine's own context: what its KV holds, and the role prefixes' saved KV states.

Why: each role's system prompt (+ few-shot turns) is evaluated once; its KV state for sequence 0
is saved (a few hundred KB, ~0.3 ms) and restored when a prompt starts with it, so alternating
roles never re-read a prefix. (`Llama.save_state` would also copy n_tokens x n_vocab floats of
scores: ~60 MB for a 100-token prefix. We keep only the KV.) The caller holds the engine's lock
around every method here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_cpp import Llama

from app.errors import InputTooLong
from app.llm.decode_thread import on_decode_thread
from app.llm.hidden import LayerTap, deferred_signals
from app.llm.lru import Lru
from app.llm.native import Context
from app.llm.prompt import Prompt, common_prefix

PREFIX_CACHE_SIZE = 16  # roles x tones (x retrieved examples); a few hundred KB to a few MB each


class PrefixKV:
    """The KV of the engine's context, kept so that a prompt decodes only what is new."""

    def __init__(self, llm: Llama, tap: LayerTap) -> None:
        self._llm = llm
        self._tap = tap
        self.context = Context.of(llm)
        self.n_ctx = llm.n_ctx()
        self._states: Lru[tuple[int, ...], bytes] = Lru(PREFIX_CACHE_SIZE)
        self._kv_prefix: tuple[int, ...] | None = None  # the cached prefix the KV starts with
        self.logits_stale = False  # True after a pass stopped early (read_states)

    @property
    def n_tokens(self) -> int:
        return self._llm.n_tokens

    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None:
        if len(prompt.tokens) + reserve > self.n_ctx:
            raise InputTooLong(
                f"The input needs {len(prompt.tokens) + reserve} tokens but the context window "
                f"holds {self.n_ctx}. Shorten the text or raise --ctx (ALLINONE_N_CTX)."
            )

    def evaluate(
        self, prompt: Prompt, *, exact: bool, layers: Sequence[int] = (), stop: bool = False
    ) -> int:
        """Leave the KV cache holding exactly `prompt.tokens`, with fresh logits for the last;
        return how many of them were already there (restored or kept), not decoded now.

        The prefix's KV only ever comes from decoding the prefix alone from position 0 (or from
        restoring a state saved right after that), never from a longer batch: llama.cpp's
        kernels round differently for different batch shapes. With `exact`, the rest is then
        decoded in one call too, so a label decision is bit-identical whatever ran before it.
        Without it (chat), any longer common prefix already in the KV is reused as well.
        The hidden states of `layers` are kept for the tokens decoded after the prefix; with
        `stop`, that last decode ends after the deepest of them (its logits are then stale).
        """
        tokens = prompt.tokens
        prefix = tuple(tokens[: prompt.prefix_len])
        held = common_prefix(self._llm.input_ids[: self._llm.n_tokens], tokens)
        found = held  # tokens this call finds in the KV or the prefix cache, not decodes
        if prefix and not (held >= len(prefix) and self._kv_prefix == prefix):
            if prefix in self._states:
                self._restore(prefix)
                found = len(prefix)
            elif exact:
                self.truncate(0)
                self.decode(list(prefix))
                self._save(prefix)
                found = 0
            else:  # chat: start from the longest saved or held part (a role's tone prefix)
                found = self._build_prefix(prompt, held)
            self._kv_prefix = prefix
            held = len(prefix)
        elif not prefix and exact:
            held = found = 0
        keep = min(len(prefix) if exact and prefix else held, len(tokens) - 1)
        self.truncate(keep)
        if keep < len(prefix):  # the prompt IS the prefix: its last token is decoded again
            self._kv_prefix = None
        with self._tap.watch(layers, stop=stop):
            self.decode(tokens[keep:])
        self.logits_stale = self._tap.cut_short
        return min(found, keep)

    def _build_prefix(self, prompt: Prompt, held: int) -> int:
        """Decode a chat prompt's prefix after the longest part of it already known, keeping
        its state (and the shared start's) in the prefix cache; return that known part's
        length (what was not decoded now)."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        known = start = self._restore_longest(prefix, held)
        if start < prompt.base_len < len(prefix):  # keep the shared start on its own
            self.decode(list(prefix[start : prompt.base_len]))
            self._save(prefix[: prompt.base_len])
            start = prompt.base_len
        self.decode(list(prefix[start:]))
        self._save(prefix)
        return known

    def prefix_kv(self, prompt: Prompt) -> bytes | None:
        """The KV state of a chat prompt's prefix, for a reply generated in a scheduler slot:
        from the prefix cache, else decoded here as `stream` would and kept. None if the prompt
        has no prefix. Call with the lock held."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        if not prefix:
            return None
        if prefix not in self._states:
            held = common_prefix(self._llm.input_ids[: self._llm.n_tokens], prefix)
            self._build_prefix(prompt, held)
            self._kv_prefix = prefix
        return self._states.get(prefix)

    def _restore_longest(self, prefix: tuple[int, ...], held: int) -> int:
        """Put the longest known start of `prefix` in the KV (a saved prefix state, or what the
        KV already holds) and return its length. Only for chat: a prefix built in two calls
        rounds differently from one decoded at once (see `_evaluate`)."""
        saved = max(
            (p for p in self._states if len(p) < len(prefix) and prefix[: len(p)] == p),
            key=len,
            default=(),
        )
        if len(saved) > min(held, len(prefix) - 1):
            self._restore(saved)
            return len(saved)
        start = min(held, len(prefix) - 1)
        self.truncate(start)
        return start

    def decode(self, tokens: Sequence[int]) -> None:
        self.logits_stale = False
        with deferred_signals():  # see app/llm/hidden.py: Ctrl-C must not land in the callback
            on_decode_thread(self._llm.eval, tokens)

    def truncate(self, n_tokens: int) -> None:
        self.context.remove(0, n_tokens)
        self._llm.n_tokens = n_tokens
        if self._kv_prefix is not None and n_tokens < len(self._kv_prefix):
            self._kv_prefix = None

    def _save(self, prefix: tuple[int, ...]) -> None:
        self._states.put(prefix, self.context.save(0))

    def _restore(self, prefix: tuple[int, ...]) -> None:
        state = self._states.get(prefix)
        self.truncate(0)
        if state is None or not self.context.restore(0, state):
            self._states.pop(prefix)  # never trust it again; decode the prefix instead
            self.truncate(0)
            self.decode(list(prefix))
            self._save(prefix)
            return
        self._llm.input_ids[: len(prefix)] = prefix
        self._llm.n_tokens = len(prefix)

    def last_logits(self) -> np.ndarray:
        if self.logits_stale:
            raise RuntimeError("the last pass stopped early: its logits were never computed")
        return self.context.logits(-1)

    # -- the saved prefix states ---------------------------------------------------------

    def prefix_state(self, prompt: Prompt) -> bytes:
        """The KV state of `prompt`'s cacheable prefix, decoded now unless already kept."""
        state = self._states.get(prompt.prefix)
        if state is None:
            self.evaluate(prompt, exact=False)
            state = self._states.get(prompt.prefix)
        assert state is not None
        return state

    def offer(self, prompt: Prompt, state: bytes) -> bool:
        """Keep a prefix state saved by an earlier process, unless one is held already; True if
        it was taken. A state llama.cpp refuses is dropped at first use and decoded instead."""
        prefix = prompt.prefix
        if not prefix or prefix in self._states:
            return False
        self._states.put(prefix, state)
        return True

    def holds(self, prompt: Prompt) -> bool:
        return prompt.prefix in self._states

    @property
    def saved_prefixes(self) -> int:
        """How many prefix states are kept (tests and benchmarks look)."""
        return len(self._states)

    def forget(self, *, prefixes: bool) -> None:
        self.truncate(0)
        if prefixes:
            self._states.clear()
