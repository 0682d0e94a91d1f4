"""Closed-set answers read from the logits, and middle-layer states read for learned heads.

Label choice from logits: with a grammar that allows only the labels, greedy decoding takes the
best-scoring label token at each step. We walk the labels' token trie over the same logits,
which gives the same decision plus a probability, without the grammar sampler's scan of the
whole vocabulary (~28 ms). `choose_with_grammar` runs the real GBNF sampler for checking.
Lists go several texts a llama.cpp call (app/llm/streams.py), with the same results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from llama_cpp import Llama

from app.llm.hidden import LayerTap
from app.llm.kv import PrefixKV
from app.llm.native import Sampler, layer_count
from app.llm.prompt import Prompt
from app.llm.sampling import shares
from app.llm.streams import StreamBatch, plan
from app.llm.tokens import Tokenizer

# Lists: texts decoded together, each in a KV stream of this many cells (streams x cells x
# ~12 KB of KV for the 0.5B models: 42 MB). Seven, not eight: calls of eight streams changed the
# logits of 7 in 1,000 train texts slightly; seven kept 1,300 of 1,300 bit-identical.
STREAMS = 7
STREAM_CELLS = 512
# Texts whose lengths differ by up to this many tokens share a call (the shorter ones padded):
# 2% of the tokens decoded are padding on dev, and its 300 texts take 50 calls instead of 110.
PAD_SLACK = 8


class LabelReader:
    """Label probabilities and hidden states for prompts, on the engine's context and lock."""

    def __init__(
        self,
        llm: Llama,
        kv: PrefixKV,
        tokens: Tokenizer,
        tap: LayerTap,
        lock: AbstractContextManager[Any],
    ) -> None:
        self._llm = llm
        self._kv = kv
        self._tokens = tokens
        self._tap = tap
        self.lock = lock
        self.n_embd = llm.n_embd()
        self.n_batch = llm.n_batch
        # Layers whose states a head may read: all but the last, whose output is the logits'.
        self.middle_layers = range(layer_count(llm) - 1)
        self._streams: StreamBatch | None = None  # made on the first list that can use it

    def choose(
        self, prompt: Prompt, labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> tuple[list[float], np.ndarray]:
        """Probability of each label as the model's answer, as greedy grammar decoding sees it.

        At each step only tokens that continue some label are allowed (that is what the labels'
        grammar does); the best one is taken, and its share among the allowed tokens is the
        confidence of that step. Labels that share a first token are told apart by evaluating
        further. Returns probabilities aligned with `labels`, summing to 1 (the argmax is the
        label greedy decoding under the grammar would write), and, per layer in `layers`, the
        last token's hidden state and the mean over the tokens after the cached prefix
        (features for a learned head; shape (len(layers), 2 * n_embd), empty if none asked).
        """
        label_tokens = [self._tokens.tokenize(label) for label in labels]
        self._kv.check_fits(prompt, reserve=max(len(t) for t in label_tokens))
        for layer in layers:
            if layer not in self.middle_layers:
                raise ValueError(f"layer {layer} is not a middle layer of this model")
        with self.lock:
            self._kv.evaluate(prompt, exact=True, layers=layers)
            states = self._tap.pooled(self.n_embd) if layers else np.empty((0, 2 * self.n_embd))
            probabilities = self._walk(label_tokens, depth=0, base=len(prompt.tokens))
            self._kv.truncate(len(prompt.tokens))
        return probabilities, states

    def choose_many(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> list[tuple[list[float], np.ndarray]]:
        """`choose` for each prompt, in fewer llama.cpp calls (same results: app/llm/streams.py).

        Prompts with the same cached prefix and close token lengths after it are decoded
        together, each in its own KV stream and padded to the longest (app/llm/streams.py). The
        rest, and labels that share a first token (their walk needs more decoding per text), go
        one by one.
        """
        label_tokens = [self._tokens.tokenize(label) for label in labels]
        first_tokens = [tokens[0] for tokens in label_tokens]
        if len(set(first_tokens)) < len(labels):  # their walk needs more decoding per text
            return [self.choose(prompt, labels, layers=layers) for prompt in prompts]
        results: list[tuple[list[float], np.ndarray] | None] = [None] * len(prompts)
        for indices, prefix, rests in self.stream_sets(prompts):
            if prefix is None:
                results[indices[0]] = self.choose(prompts[indices[0]], labels, layers=layers)
                continue
            with self.lock:
                batch = self.stream_batch().decode(prefix, rests, layers)
            for index, logits, states in zip(indices, *batch, strict=True):
                results[index] = ([float(x) for x in shares(logits, first_tokens)], states)
        return results  # type: ignore[return-value]

    def stream_sets(
        self, prompts: Sequence[Prompt]
    ) -> Iterator[tuple[list[int], tuple[int, ...] | None, list[list[int]]]]:
        """How the list path splits `prompts` into llama.cpp calls: (indices, prefix, rests)
        per call, or (one index, None, []) for a prompt decoded alone (no cached prefix, too
        long for a stream, or no partner of a close length)."""
        sets: dict[tuple[int, ...], list[int]] = {}
        for index, prompt in enumerate(prompts):
            rest = len(prompt.tokens) - prompt.prefix_len
            if prompt.prefix_len and self._fits_stream(prompt, 2 * rest):
                sets.setdefault(tuple(prompt.tokens[: prompt.prefix_len]), []).append(index)
            else:
                yield [index], None, []
        for prefix, members in sets.items():
            rests = [prompts[index].tokens[len(prefix) :] for index in members]
            lengths = [len(rest) for rest in rests]
            streams = self._stream_count()
            for group in plan(lengths, streams=streams, n_batch=self.n_batch, slack=PAD_SLACK):
                if len(group) == 1:
                    yield [members[group[0]]], None, []
                else:
                    yield [members[i] for i in group], prefix, [rests[i] for i in group]

    def read_states(self, prompt: Prompt, layers: Sequence[int]) -> np.ndarray:
        """The pooled states `choose` gives for `layers`, from a pass that stops after the
        deepest of them: what a role decided by its head needs, 1.3x faster (app/llm/hidden.py).

        The stopped pass leaves stale logits and upper-layer KV for the text: the logits can
        no longer be read (`_last_logits` raises) and the KV is cut back to the prefix.
        """
        self._check_layers(prompt, layers)
        with self.lock:
            self._kv.evaluate(prompt, exact=True, layers=layers, stop=True)
            states = self._tap.pooled(self.n_embd)
            self._kv.truncate(min(prompt.prefix_len, len(prompt.tokens) - 1))
        return states

    def read_states_many(
        self, prompts: Sequence[Prompt], layers: Sequence[int]
    ) -> list[np.ndarray]:
        """`read_states` for each prompt, several texts a call as in `choose_many`."""
        for prompt in prompts:
            self._check_layers(prompt, layers)
        results: list[np.ndarray | None] = [None] * len(prompts)
        for indices, prefix, rests in self.stream_sets(prompts):
            if prefix is None:
                results[indices[0]] = self.read_states(prompts[indices[0]], layers)
                continue
            with self.lock:
                _, states = self.stream_batch().decode(prefix, rests, layers, logits=False)
            for index, pooled in zip(indices, states, strict=True):
                results[index] = pooled
        return results  # type: ignore[return-value]

    def _check_layers(self, prompt: Prompt, layers: Sequence[int]) -> None:
        if not layers:
            raise ValueError("read_states needs the layers to read")
        for layer in layers:
            if layer not in self.middle_layers:
                raise ValueError(f"layer {layer} is not a middle layer of this model")
        self._kv.check_fits(prompt, reserve=0)

    def _fits_stream(self, prompt: Prompt, batch_tokens: int) -> bool:
        cells = min(STREAM_CELLS, self._kv.n_ctx)
        return len(prompt.tokens) < cells and batch_tokens <= self.n_batch

    def _stream_count(self) -> int:
        """A small --batch (the low-memory profile) fits few texts a call: fewer streams."""
        return min(STREAMS, max(2, self.n_batch // 32))

    def stream_batch(self) -> StreamBatch:
        if self._streams is None:
            self._streams = StreamBatch(
                self._llm,
                self._tap,
                streams=self._stream_count(),
                cells=min(STREAM_CELLS, self._kv.n_ctx),
            )
        return self._streams

    def _walk(self, label_tokens: list[list[int]], depth: int, base: int) -> list[float]:
        """Split probability mass among labels by their token at `depth` (recursing on ties).

        A label that ends before `depth` continues with the end-of-turn token, exactly as the
        grammar would let the model stop there.
        """
        end_of_turn = self._llm.token_eos()
        groups: dict[int, list[int]] = {}
        for index, tokens in enumerate(label_tokens):
            groups.setdefault(tokens[depth] if depth < len(tokens) else end_of_turn, []).append(
                index
            )
        next_tokens = list(groups)
        split = shares(self._kv.last_logits(), next_tokens)
        result = [0.0] * len(label_tokens)
        for token, share in zip(next_tokens, split, strict=True):
            members = groups[token]
            if len(members) == 1:
                result[members[0]] = float(share)
                continue
            # Several labels continue with this token: decode it and split its share among them.
            self._kv.truncate(base + depth)
            self._kv.decode([token])
            deeper = self._walk(label_tokens, depth + 1, base)
            for member in members:
                result[member] = float(share) * deeper[member]
        return result

    def opening_probability(self, prompt: Prompt, openings: Sequence[str]) -> tuple[float, int]:
        """The probability that the reply to `prompt` starts with the first token of one of
        `openings` (over the whole vocabulary), and how many prompt tokens the KV already held
        (not decoded now)."""
        tokens = {self._tokens.tokenize(text, special=True)[0] for text in openings}
        self._kv.check_fits(prompt, reserve=1)
        with self.lock:
            cached = self._kv.evaluate(prompt, exact=False)
            logits = self._kv.last_logits().astype(np.float64)
        exp = np.exp(logits - logits.max())
        return float(sum(exp[token] for token in tokens) / exp.sum()), cached

    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str:
        """Greedy decoding under a GBNF grammar with llama.cpp's own grammar sampler."""
        longest = max(len(self._tokens.tokenize(label)) for label in labels)
        self._kv.check_fits(prompt, reserve=longest)
        sampler = Sampler().checked_grammar(self._llm, grammar).greedy()
        vocab = self._tokens.vocab
        out = b""
        with self.lock:
            self._kv.evaluate(prompt, exact=True)
            for _ in range(longest * 4):
                token = self._kv.context.sample(sampler, -1)
                if vocab.is_end_of_generation(token):
                    break
                out += self._tokens.piece(token)
                text = out.decode("utf-8", errors="ignore")
                if text in labels and not any(
                    other != text and other.startswith(text) for other in labels
                ):
                    break
                self._kv.decode([token])
            self._kv.truncate(len(prompt.tokens))
        return out.decode("utf-8", errors="replace")

    @property
    def stream_batch_made(self) -> bool:
        """Whether a list has been decoded several texts a call yet (tests look)."""
        return self._streams is not None

    def close(self) -> None:
        if self._streams is not None:
            self._streams.close()
