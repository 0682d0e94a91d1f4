"""Several texts in one llama.cpp decode, each giving exactly what it gives alone.

Why: a list of short texts decoded one per call leaves llama.cpp's matrix kernels half idle
(~50 tokens a call on 2 cores). Packing texts into one batch fills them, but only one layout keeps
every decision bit-identical to the one-text path (measured: scripts/list_batching.py):

- each text gets its own KV stream (a second context with `kv_unified=false`), holding the role
  prefix (decoded alone from position 0 once, as the engine does, and restored per stream), so
  its cells sit exactly where they sit when decoded alone. In one shared KV the text's cells
  move, and attention sums round differently;
- every stream of a call decodes the SAME number of tokens: llama.cpp splits unequal sequences
  of separate streams into several steps, and a text read in two steps rounds differently from
  one read in one. So shorter texts are padded after their end (repeating their last token):
  causal attention keeps the padding out of the text's own states and logits, which are read at
  the text's last real token.

The context shares the loaded weights (no second model) and costs streams x cells x ~12 KB of KV.
Measured with up to 7 streams a call: bit-identical on all 300 dev texts and on 1,000
reviews_train.csv texts. Calls of 8 streams changed 7 of those 1,000 slightly (label logits within
~1e-2); the cause is inside llama.cpp and not yet found, so the engine uses 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llama_cpp import Llama

from app.llm.hidden import LayerTap, deferred_signals
from app.llm.lru import Lru
from app.llm.native import Batch, Context


class StreamBatch:
    """A second context over the engine's model with one KV stream per sequence."""

    def __init__(self, llm: Llama, tap: LayerTap, *, streams: int, cells: int) -> None:
        # The engine's own parameters (threads, batch size, eval callback...), so every kernel
        # runs exactly as in the one-text path; only the KV layout differs.
        self._context = Context.beside(llm, n_ctx=streams * cells, sequences=streams)
        self._text_batch = Batch(llm.n_batch)
        self._tap = tap
        self._held: list[bytes | None] = [None] * streams  # the prefix state in each stream
        self._prefixes: Lru[tuple[int, ...], bytes] = Lru(1)  # one role's list at a time
        self.streams = streams
        self.cells = cells
        self.n_batch = llm.n_batch
        self.n_embd = llm.n_embd()

    def decode(
        self,
        prefix: Sequence[int],
        rests: Sequence[Sequence[int]],
        layers: Sequence[int] = (),
        *,
        logits: bool = True,
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Decode token lists after the same prefix, one stream each, padded to the longest.

        Returns each one's last-token logits, and per text the pooled states of `layers`
        (shape (len(rests), len(layers), 2 * n_embd)), as `Engine.choose` computes them.
        With `logits=False` the pass stops after the deepest of `layers` (app/llm/hidden.py) and
        no logits are returned: they were never computed.
        """
        if not logits and not layers:
            raise ValueError("a pass without logits must read some layers")
        length = max(len(rest) for rest in rests)
        if len(rests) > self.streams or not all(rests):
            raise ValueError("a stream batch takes up to `streams` non-empty token lists")
        if length * len(rests) > self.n_batch or len(prefix) + length >= self.cells:
            raise ValueError("the texts do not fit one batch of this context")
        state = self._prefix_state(tuple(prefix))
        position = 0
        for seq, rest in enumerate(rests):
            self._reset(seq, state, len(prefix))
            padded = [*rest, *[rest[-1]] * (length - len(rest))]  # after the text: unseen by it
            for offset, token in enumerate(padded):
                last = offset == len(rest) - 1
                self._text_batch.put(position, token, len(prefix) + offset, seq, last)
                position += 1
        self._decode(position, layers, stop=not logits)
        last_logits = [
            self._context.logits(seq * length + len(rest) - 1).copy()
            for seq, rest in enumerate(rests)
            if logits
        ]
        states = (
            self._tap.pooled_each(self.n_embd, [len(rest) for rest in rests])
            if layers
            else np.empty((len(rests), 0, 2 * self.n_embd))
        )
        return last_logits, states

    def _prefix_state(self, prefix: tuple[int, ...]) -> bytes:
        """The prefix's KV as decoded alone from position 0 in stream 0 (as the engine does)."""
        state = self._prefixes.get(prefix)
        if state is not None:
            return state
        self._context.remove(0)
        for start in range(0, len(prefix), self.n_batch):  # the chunks llm.eval would use
            chunk = prefix[start : start + self.n_batch]
            for offset, token in enumerate(chunk):
                self._text_batch.put(offset, token, start + offset, 0, offset == len(chunk) - 1)
            self._decode(len(chunk))
        state = self._context.save(0)
        self._prefixes.put(prefix, state)
        self._held[0] = state
        return state

    def _decode(self, n_tokens: int, layers: Sequence[int] = (), stop: bool = False) -> None:
        try:
            with self._tap.watch(layers, stop=stop), deferred_signals():
                self._context.decode(self._text_batch, n_tokens)
        except RuntimeError:
            self._held = [None] * self.streams
            raise

    def _reset(self, seq: int, prefix_state: bytes, prefix_len: int) -> None:
        """Leave stream `seq` holding exactly the prefix (restored only if another was there)."""
        if self._held[seq] is prefix_state:
            self._context.remove(seq, prefix_len)
            return
        self._context.remove(seq)
        if not self._context.restore(seq, prefix_state):
            self._held[seq] = None
            raise RuntimeError("could not restore the role prefix into a batch stream")
        self._held[seq] = prefix_state

    def close(self) -> None:
        self._text_batch.free()
        self._context.close()


def plan(lengths: Sequence[int], *, streams: int, n_batch: int, slack: int) -> list[list[int]]:
    """Group texts (by index) for `StreamBatch.decode`: shortest first, each group's lengths
    within `slack` tokens of each other (padding is wasted work) and its padded size within
    `n_batch`. A text too long to share a batch gets a group of its own."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        group = groups[-1] if groups else []
        longest = lengths[index]  # sorted: the newcomer is the longest
        fits = (
            group
            and len(group) < streams
            and longest - lengths[group[0]] <= slack
            and longest * (len(group) + 1) <= n_batch
        )
        if fits:
            group.append(index)
        else:
            groups.append([index])
    return groups
