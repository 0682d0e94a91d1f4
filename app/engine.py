"""The engine: the ONE llama.cpp model, loaded once and shared by every role.

It knows tokens, not roles: evaluate a prompt (restoring a cached prefix when one matches), pick
one of a closed set of labels with its probability, or stream generated text. Three things make it
fast and safe:

- Prefix cache. Each role's system prompt (+ few-shot turns) is evaluated once; its KV state for
  sequence 0 is saved (a few hundred KB, ~0.3 ms) and restored when a prompt starts with it, so
  alternating roles never re-reads a prefix. (`Llama.save_state` would also copy n_tokens x
  n_vocab floats of scores: ~60 MB for a 100-token prefix. We keep only the KV.)
- Label choice from logits. With a grammar that allows only the labels, greedy decoding takes
  the best-scoring label token at each step. We walk the labels' token trie over the same logits,
  which gives the same decision plus a probability, without the grammar sampler's scan of the
  whole vocabulary (~28 ms). `choose_with_grammar` runs the real GBNF sampler for checking.
- One lock. A llama.cpp context is not thread-safe; every call holds the lock. With `parallel`
  above 1, replies go to app/scheduler.py, which decodes them together and takes the lock per
  step, so labels are served between two steps; with 1, a reply holds it until it ends.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp._internals import LlamaSampler
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from app.completion import Completion, TokenLogprob
from app.errors import InputError, InputTooLong, ModelLoadError, ModelNotFound
from app.generation import Generation
from app.hidden import LayerTap, deferred_signals
from app.scheduler import FairLock, Scheduler, common_prefix
from app.streams import StreamBatch, plan

# Used when a GGUF carries no chat template: Qwen's ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PREFIX_CACHE_SIZE = 16  # roles x tones (x retrieved examples); a few hundred KB to a few MB each
# Lists: texts decoded together, each in a KV stream of this many cells (streams x cells x
# ~12 KB of KV for the 0.5B models: 42 MB). Seven, not eight: calls of eight streams changed the
# logits of 7 in 1,000 train texts slightly; seven kept 1,300 of 1,300 bit-identical.
STREAMS = 7
STREAM_CELLS = 512
# Texts whose lengths differ by up to this many tokens share a call (the shorter ones padded):
# 2% of the tokens decoded are padding on dev, and its 300 texts take 50 calls instead of 110.
PAD_SLACK = 8
PENALTY_WINDOW = 64  # tokens the penalties look back over (llama.cpp server's default too)


@dataclass(frozen=True)
class Sampling:
    """How to pick each generated token."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    max_sentences: int = 0  # end after this many sentences (0: no limit)
    banned: tuple[tuple[int, ...], ...] = ()  # token sequences never completed (app/guards.py)
    no_repeat: int = 0  # no run of this many tokens twice in the reply (0: off)
    # OpenAI's penalties, applied by llama.cpp's penalties sampler over the last
    # PENALTY_WINDOW tokens generated: logit - count * frequency - (count > 0) * presence.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str = ""  # GBNF the reply must match (JSON mode, forced tool calls); "" for none
    top_logprobs: int | None = None  # None: no logprobs; n: each token's and n alternatives


@dataclass(frozen=True)
class Prompt:
    """Prompt tokens plus how many of them form a reusable prefix (system prompt, few-shots)."""

    tokens: list[int]
    prefix_len: int = 0
    base_len: int = 0  # a shorter start of the prefix that several prefixes share (chat only)


class Engine:
    """One loaded GGUF model behind a lock."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 512,
        extra_buffers: bool = False,
        parallel: int = 1,
        verbose: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        _check_gguf_file(self.model_path)
        started = time.perf_counter()
        try:
            self._tap = LayerTap()
            with _load_params(extra_buffers=extra_buffers, eval_callback=self._tap.callback):
                self.llm = Llama(
                    model_path=str(self.model_path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_batch=min(n_batch, n_ctx),
                    logits_all=False,
                    use_mmap=True,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelLoadError(
                f"llama.cpp could not load {self.model_path} ({error}). The file may be truncated "
                "or corrupt: delete it and download it again (allinone download)."
            ) from None
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        self.n_embd = self.llm.n_embd()
        self.n_batch = self.llm.n_batch
        self.n_layer = llama_cpp.llama_model_n_layer(self.llm._model.model)
        # Layers whose states a head may read: all but the last, whose output is the logits'.
        self.middle_layers = range(self.n_layer - 1)
        self._ctx = self.llm._ctx.ctx
        self.vocab = self.llm._model.vocab
        self.lock = FairLock()  # granted in arrival order: see app/scheduler.py
        self._piece_buffer = ctypes.create_string_buffer(64)
        self._prefix_states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._kv_prefix: tuple[int, ...] | None = None  # the cached prefix the KV starts with
        self._streams: StreamBatch | None = None  # made on the first list that can use it
        self._phrase_tokens: dict[str, list[tuple[int, ...]]] = {}
        self._logits_stale = False  # True after a pass stopped early (read_states)
        self.generated_tokens = 0  # tokens sampled by stream() since the load, for benchmarks
        template = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        # Qwen2.5's template renders OpenAI tools; ChatML and Qwen1.5's cannot show any.
        self.supports_tools = "tools" in template
        specials = {
            "eos_token": self._token_text(self.llm.token_eos()),
            "bos_token": self._token_text(self.llm.token_bos()),
        }
        self._formatter = Jinja2ChatFormatter(template=template, **specials)
        # Replies generated together (app/scheduler.py), its context made at the first reply so
        # a process that only labels never pays for it; with 1, each reply runs alone on the
        # engine's own context, holding the lock until it ends.
        self.parallel = parallel
        self._scheduler: Scheduler | None = None
        self._prefix_formatter = Jinja2ChatFormatter(
            template=template, add_generation_prompt=False, **specials
        )

    @property
    def model_name(self) -> str:
        return _model_name(self.llm.metadata, self.model_path)

    # -- text <-> tokens ------------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        prefix_messages: int = 0,
        lead: str = "",
        base_messages: int = 0,
        tools: Sequence[dict[str, Any]] = (),
        reply_start: str = "",
    ) -> Prompt:
        """Render messages with the model's own chat template, ready for the assistant's turn.

        The first `prefix_messages` messages (system prompt, few-shot turns) form the cacheable
        prefix. When only the final message follows them, the opening of its turn and `lead`,
        the fixed text its content starts with (a role template's part before {text}), join the
        prefix too, so each new text costs only its own tokens and the template's tail.
        Message contents are tokenized with special tokens OFF, so text such as "<|im_end|>"
        typed by a user stays text and can never close a turn or forge a role.
        `base_messages` marks a shorter start of the prefix that other prefixes share (a chat
        role's system prompt before its retrieved examples): the engine keeps it too.
        `tools` (OpenAI function specs) go to the template's tools section, other message keys
        (an assistant turn's `tool_calls`) to the template as they are; both are template text,
        so the caller checks they hold no control-token text (app/tools.py). `reply_start` is
        text the assistant's turn is made to begin with (a forced tool call's opening tag).
        """
        # An empty content gets no marker: templates test it ("if message.content").
        markers = [
            f"\x00{index}\x00" if message["content"] else ""
            for index, message in enumerate(messages)
        ]
        placeholders = [
            {**message, "content": marker}
            for message, marker in zip(messages, markers, strict=True)
        ]
        extra = {"tools": list(tools)} if tools else {}
        full = self._formatter(messages=placeholders, **extra).prompt
        boundary = -1
        if prefix_messages:
            head = self._prefix_formatter(messages=placeholders[:prefix_messages], **extra).prompt
            boundary = len(head) if full.startswith(head) else -1

        tokens: list[int] = []
        prefix_len = base_len = 0
        position = 0
        for index, (message, marker) in enumerate(
            [*zip(messages, markers, strict=True), ({"content": ""}, None)]
        ):
            if marker == "":  # nothing to find: its template text joins the next segment
                continue
            at = full.find(marker, position) if marker else len(full)
            if at < 0:
                raise ModelLoadError(
                    "The model's chat template dropped a message; use another model."
                )
            segment = full[position:at]
            if position <= boundary <= at:  # the prefix ends inside this template segment
                tokens += self.tokenize(segment[: boundary - position], special=True)
                prefix_len = len(tokens)
                segment = segment[boundary - position :]
            tokens += self.tokenize(segment, special=True)
            if index == base_messages and 0 < base_messages < prefix_messages:
                base_len = len(tokens)
            content = message["content"]
            final = marker is not None and marker == markers[-1]
            only_final_follows = prefix_len > 0 and prefix_messages == len(messages) - 1
            if lead and final and only_final_follows and content.startswith(lead):
                tokens += self.tokenize(lead)
                prefix_len = len(tokens)
                content = content[len(lead) :]
            tokens += self.tokenize(content) if marker else []
            position = at + len(marker or "")
        tokens += self.tokenize(reply_start, special=True)
        return Prompt(tokens=tokens, prefix_len=prefix_len, base_len=min(base_len, prefix_len))

    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]:
        """Token sequences that write any of `phrases`: each one's own tokenization, plus every
        single token whose text contains it (e.g. 很开心 for 开心). For app/guards.py."""
        missing = [phrase for phrase in phrases if phrase and phrase not in self._phrase_tokens]
        if missing:
            pieces = [self.piece(token) for token in range(self.n_vocab)]  # ~0.2 s, once
            for phrase in missing:
                wanted = phrase.encode("utf-8")
                found = {tuple(self.tokenize(phrase))}
                found |= {(token,) for token, piece in enumerate(pieces) if wanted in piece}
                self._phrase_tokens[phrase] = sorted(found)
        return [seq for phrase in phrases if phrase for seq in self._phrase_tokens[phrase]]

    def piece(self, token: int) -> bytes:
        """The raw bytes of one token (control tokens give none); may be part of a character."""
        size = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buffer, 64, 0, False)
        if size < 0:  # buffer too small: retry with the size llama.cpp asked for
            bigger = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self.vocab, token, bigger, -size, 0, False)
            return bigger.raw[:size]
        return self._piece_buffer.raw[:size]

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm._model.token_get_text(token)

    # -- evaluation with the prefix cache -------------------------------------------------

    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None:
        if len(prompt.tokens) + reserve > self.n_ctx:
            raise InputTooLong(
                f"The input needs {len(prompt.tokens) + reserve} tokens but the context window "
                f"holds {self.n_ctx}. Shorten the text or raise --ctx (ALLINONE_N_CTX)."
            )

    def _evaluate(
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
        held = common_prefix(self.llm.input_ids[: self.llm.n_tokens], tokens)
        if prefix and not (held >= len(prefix) and self._kv_prefix == prefix):
            if prefix in self._prefix_states:
                self._restore(prefix)
            elif exact:
                self._truncate(0)
                self._decode(list(prefix))
                self._save(prefix)
            else:  # chat: start from the longest saved or held part (a role's tone prefix)
                self._build_prefix(prompt, held)
            self._kv_prefix = prefix
            held = len(prefix)
        elif not prefix and exact:
            held = 0
        keep = min(len(prefix) if exact and prefix else held, len(tokens) - 1)
        self._truncate(keep)
        if keep < len(prefix):  # the prompt IS the prefix: its last token is decoded again
            self._kv_prefix = None
        with self._tap.watch(layers, stop=stop):
            self._decode(tokens[keep:])
        self._logits_stale = self._tap.cut_short
        return keep

    def _build_prefix(self, prompt: Prompt, held: int) -> None:
        """Decode a chat prompt's prefix after the longest part of it already known, keeping
        its state (and the shared start's) in the prefix cache."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        start = self._restore_longest(prefix, held)
        if start < prompt.base_len < len(prefix):  # keep the shared start on its own
            self._decode(list(prefix[start : prompt.base_len]))
            self._save(prefix[: prompt.base_len])
            start = prompt.base_len
        self._decode(list(prefix[start:]))
        self._save(prefix)

    def prefix_kv(self, prompt: Prompt) -> bytes | None:
        """The KV state of a chat prompt's prefix, for a reply generated in a scheduler slot:
        from the prefix cache, else decoded here as `stream` would and kept. None if the prompt
        has no prefix. Call with the lock held."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        if not prefix:
            return None
        if prefix not in self._prefix_states:
            held = common_prefix(self.llm.input_ids[: self.llm.n_tokens], prefix)
            self._build_prefix(prompt, held)
            self._kv_prefix = prefix
        self._prefix_states.move_to_end(prefix)
        return self._prefix_states[prefix]

    def _restore_longest(self, prefix: tuple[int, ...], held: int) -> int:
        """Put the longest known start of `prefix` in the KV (a saved prefix state, or what the
        KV already holds) and return its length. Only for chat: a prefix built in two calls
        rounds differently from one decoded at once (see `_evaluate`)."""
        saved = max(
            (p for p in self._prefix_states if len(p) < len(prefix) and prefix[: len(p)] == p),
            key=len,
            default=(),
        )
        if len(saved) > min(held, len(prefix) - 1):
            self._restore(saved)
            return len(saved)
        start = min(held, len(prefix) - 1)
        self._truncate(start)
        return start

    def _decode(self, tokens: Sequence[int]) -> None:
        self._logits_stale = False
        with deferred_signals():  # see app/hidden.py: Ctrl-C must not land in the callback
            self.llm.eval(tokens)

    def _truncate(self, n_tokens: int) -> None:
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, n_tokens, -1)
        self.llm.n_tokens = n_tokens
        if self._kv_prefix is not None and n_tokens < len(self._kv_prefix):
            self._kv_prefix = None

    def _save(self, prefix: tuple[int, ...]) -> None:
        size = llama_cpp.llama_state_seq_get_size(self._ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._ctx, buffer, size, 0)
        self._prefix_states[prefix] = bytes(buffer[:written])
        while len(self._prefix_states) > _PREFIX_CACHE_SIZE:
            self._prefix_states.popitem(last=False)

    def _restore(self, prefix: tuple[int, ...]) -> None:
        state = self._prefix_states[prefix]
        self._prefix_states.move_to_end(prefix)
        self._truncate(0)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self._ctx, buffer, len(state), 0) != len(state):
            self._prefix_states.pop(prefix)  # never trust it again; decode the prefix instead
            self._truncate(0)
            self._decode(list(prefix))
            self._save(prefix)
            return
        self.llm.input_ids[: len(prefix)] = prefix
        self.llm.n_tokens = len(prefix)

    def _last_logits(self) -> np.ndarray:
        if self._logits_stale:
            raise RuntimeError("the last pass stopped early: its logits were never computed")
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    # -- closed-set choice ----------------------------------------------------------------

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
        label_tokens = [self.tokenize(label) for label in labels]
        self.check_fits(prompt, reserve=max(len(t) for t in label_tokens))
        for layer in layers:
            if layer not in self.middle_layers:
                raise ValueError(f"layer {layer} is not a middle layer of this model")
        with self.lock:
            self._evaluate(prompt, exact=True, layers=layers)
            states = self._tap.pooled(self.n_embd) if layers else np.empty((0, 2 * self.n_embd))
            probabilities = self._walk(label_tokens, depth=0, base=len(prompt.tokens))
            self._truncate(len(prompt.tokens))
        return probabilities, states

    def choose_many(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> list[tuple[list[float], np.ndarray]]:
        """`choose` for each prompt, in fewer llama.cpp calls (same results: see app/streams.py).

        Prompts with the same cached prefix and close token lengths after it are decoded
        together, each in its own KV stream and padded to the longest (app/streams.py). The
        rest, and labels that share a first token (their walk needs more decoding per text), go
        one by one.
        """
        label_tokens = [self.tokenize(label) for label in labels]
        first_tokens = [tokens[0] for tokens in label_tokens]
        if len(set(first_tokens)) < len(labels):  # their walk needs more decoding per text
            return [self.choose(prompt, labels, layers=layers) for prompt in prompts]
        results: list[tuple[list[float], np.ndarray] | None] = [None] * len(prompts)
        for indices, prefix, rests in self._stream_sets(prompts):
            if prefix is None:
                results[indices[0]] = self.choose(prompts[indices[0]], labels, layers=layers)
                continue
            with self.lock:
                batch = self._stream_batch().decode(prefix, rests, layers)
            for index, logits, states in zip(indices, *batch, strict=True):
                results[index] = ([float(x) for x in _shares(logits, first_tokens)], states)
        return results  # type: ignore[return-value]

    def _stream_sets(
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
        deepest of them: what a role decided by its head needs, 1.3x faster (app/hidden.py).

        The stopped pass leaves stale logits and upper-layer KV for the text: the logits can
        no longer be read (`_last_logits` raises) and the KV is cut back to the prefix.
        """
        self._check_layers(prompt, layers)
        with self.lock:
            self._evaluate(prompt, exact=True, layers=layers, stop=True)
            states = self._tap.pooled(self.n_embd)
            self._truncate(min(prompt.prefix_len, len(prompt.tokens) - 1))
        return states

    def read_states_many(
        self, prompts: Sequence[Prompt], layers: Sequence[int]
    ) -> list[np.ndarray]:
        """`read_states` for each prompt, several texts a call as in `choose_many`."""
        for prompt in prompts:
            self._check_layers(prompt, layers)
        results: list[np.ndarray | None] = [None] * len(prompts)
        for indices, prefix, rests in self._stream_sets(prompts):
            if prefix is None:
                results[indices[0]] = self.read_states(prompts[indices[0]], layers)
                continue
            with self.lock:
                _, states = self._stream_batch().decode(prefix, rests, layers, logits=False)
            for index, pooled in zip(indices, states, strict=True):
                results[index] = pooled
        return results  # type: ignore[return-value]

    def _check_layers(self, prompt: Prompt, layers: Sequence[int]) -> None:
        if not layers:
            raise ValueError("read_states needs the layers to read")
        for layer in layers:
            if layer not in self.middle_layers:
                raise ValueError(f"layer {layer} is not a middle layer of this model")
        self.check_fits(prompt, reserve=0)

    def _fits_stream(self, prompt: Prompt, batch_tokens: int) -> bool:
        return len(prompt.tokens) < min(STREAM_CELLS, self.n_ctx) and batch_tokens <= self.n_batch

    def _stream_count(self) -> int:
        """A small --batch (the low-memory profile) fits few texts a call: fewer streams."""
        return min(STREAMS, max(2, self.n_batch // 32))

    def _stream_batch(self) -> StreamBatch:
        if self._streams is None:
            self._streams = StreamBatch(
                self.llm,
                self._tap,
                streams=self._stream_count(),
                cells=min(STREAM_CELLS, self.n_ctx),
            )
        return self._streams

    def _walk(self, label_tokens: list[list[int]], depth: int, base: int) -> list[float]:
        """Split probability mass among labels by their token at `depth` (recursing on ties).

        A label that ends before `depth` continues with the end-of-turn token, exactly as the
        grammar would let the model stop there.
        """
        end_of_turn = self.llm.token_eos()
        groups: dict[int, list[int]] = {}
        for index, tokens in enumerate(label_tokens):
            groups.setdefault(tokens[depth] if depth < len(tokens) else end_of_turn, []).append(
                index
            )
        next_tokens = list(groups)
        shares = _shares(self._last_logits(), next_tokens)
        result = [0.0] * len(label_tokens)
        for token, share in zip(next_tokens, shares, strict=True):
            members = groups[token]
            if len(members) == 1:
                result[members[0]] = float(share)
                continue
            # Several labels continue with this token: decode it and split its share among them.
            self._truncate(base + depth)
            self._decode([token])
            deeper = self._walk(label_tokens, depth + 1, base)
            for member in members:
                result[member] = float(share) * deeper[member]
        return result

    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str:
        """Greedy decoding under a GBNF grammar with llama.cpp's own grammar sampler."""
        self.check_fits(prompt, reserve=max(len(self.tokenize(label)) for label in labels))
        compiled = LlamaGrammar.from_string(grammar, verbose=False)
        sampler = LlamaSampler()
        sampler.add_grammar(self.llm._model, compiled)
        sampler.add_greedy()
        out = b""
        with self.lock:
            self._evaluate(prompt, exact=True)
            for _ in range(max(len(self.tokenize(label)) for label in labels) * 4):
                token = sampler.sample(self.llm._ctx, -1)
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    break
                out += self.piece(token)
                text = out.decode("utf-8", errors="ignore")
                if text in labels and not any(
                    other != text and other.startswith(text) for other in labels
                ):
                    break
                self._decode([token])
            self._truncate(len(prompt.tokens))
        return out.decode("utf-8", errors="replace")

    # -- streaming generation -------------------------------------------------------------

    def stream(self, prompt: Prompt, sampling: Sampling, *, reply_start: str = "") -> Completion:
        """Generate a reply: a `Completion` yielding text pieces as they are generated; it stops
        at end-of-turn, a stop string, the grammar's end or the token limit.

        Control tokens (end of turn, role markers) end the reply and are never shown. With
        `parallel` above 1 the reply joins the scheduler's next step (app/scheduler.py);
        otherwise the lock is held from the first piece until the generator finishes or is
        closed. The sampler is built here, so a grammar llama.cpp cannot parse is an error now,
        not mid-stream.
        """
        self.check_fits(prompt, reserve=1)
        budget = min(sampling.max_tokens, self.n_ctx - len(prompt.tokens))
        completion = Completion(len(prompt.tokens), reply_start=reply_start)
        generation = Generation(self, sampling, self._sampler(sampling), budget, completion)
        if self.parallel > 1:
            return completion.run(self._replies_together().submit(prompt, generation))
        return completion.run(self._generate(prompt, generation))

    def _replies_together(self) -> Scheduler:
        with self.lock:
            if self._scheduler is None:
                self._scheduler = Scheduler(self, self.parallel)
            return self._scheduler

    def _generate(self, prompt: Prompt, generation: Generation) -> Iterator[str]:
        """One reply alone on the engine's context (`parallel` 1), the lock held throughout."""
        with self.lock:
            generation.out.cached_tokens = self._evaluate(prompt, exact=False)
            token = generation.next(self._ctx, -1, self.llm.n_tokens)
            while True:
                yield from generation.take()
                if token is None:
                    break
                self._decode([token])
                token = generation.next(self._ctx, -1, self.llm.n_tokens)
            tail = generation.finish()
            if tail:
                yield tail

    def logprob(self, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
        """`token`'s log-softmax over the raw logits, with the `top` most likely tokens."""
        scores = logits.astype(np.float64)
        peak = scores.max()
        log_total = peak + np.log(np.exp(scores - peak).sum())
        best = np.argpartition(-scores, top)[:top] if top else np.array([], dtype=np.int64)
        best = best[np.argsort(-scores[best])]
        alternatives = tuple(self._token_logprob(int(t), scores[t] - log_total) for t in best)
        return replace(self._token_logprob(token, scores[token] - log_total), top=alternatives)

    def _token_logprob(self, token: int, logprob: float) -> TokenLogprob:
        piece = self.piece(token)
        return TokenLogprob(piece.decode("utf-8", errors="replace"), float(logprob), piece)

    def _sampler(self, sampling: Sampling) -> LlamaSampler:
        """The sampler chain: the grammar first (it removes what the grammar forbids before
        anything else looks at the candidates), then penalties, then top-k / top-p / temperature
        and the seeded draw, or greedy."""
        sampler = LlamaSampler()
        if sampling.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(
                self.vocab, sampling.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                raise InputError("llama.cpp could not parse the grammar built for this request.")
            llama_cpp.llama_sampler_chain_add(sampler.sampler, grammar)
        penalties = (sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty)
        if penalties != (1.0, 0.0, 0.0):
            sampler.add_penalties(self.n_vocab, PENALTY_WINDOW, *penalties)
        if sampling.temperature <= 0:
            sampler.add_greedy()
            return sampler
        if sampling.top_k > 0:
            sampler.add_top_k(sampling.top_k)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(sampling.seed)
        return sampler

    def prefix_state(self, prompt: Prompt) -> bytes:
        """The KV state of `prompt`'s cacheable prefix (decoded now unless already kept), for a
        caller that keeps it across processes (the example bank's groups)."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        with self.lock:
            if prefix not in self._prefix_states:
                self._evaluate(prompt, exact=False)
            return self._prefix_states[prefix]

    def offer_prefix_state(self, prompt: Prompt, state: bytes) -> bool:
        """Keep a prefix state saved by an earlier process, unless one is held already; True if
        it was taken. A state llama.cpp refuses is dropped at first use and decoded instead."""
        prefix = tuple(prompt.tokens[: prompt.prefix_len])
        with self.lock:
            if not prefix or prefix in self._prefix_states:
                return False
            self._prefix_states[prefix] = state
            while len(self._prefix_states) > _PREFIX_CACHE_SIZE:
                self._prefix_states.popitem(last=False)
            return True

    def holds_prefix(self, prompt: Prompt) -> bool:
        return tuple(prompt.tokens[: prompt.prefix_len]) in self._prefix_states

    def forget(self, *, prefixes: bool = False) -> None:
        """Empty the KV cache (and the free reply slots' cells), e.g. to time a cold prompt;
        with `prefixes`, the saved prefix states too, so the next prompt is evaluated as in a
        fresh process."""
        with self.lock:
            self._truncate(0)
            if prefixes:
                self._prefix_states.clear()
            if self._scheduler is not None:
                self._scheduler.forget(prefixes=prefixes)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
        with self.lock:
            self._prefix_states.clear()
            if self._streams is not None:
                self._streams.close()
            self.llm.close()


_PARAMS_LOCK = threading.Lock()


@contextmanager
def _load_params(*, extra_buffers: bool, eval_callback: object) -> Iterator[None]:
    """Load with extra CPU weight buffers on or off, and with our eval callback installed.

    Why extra buffers are off by default: on Xeons that report AMX, llama.cpp's AMX kernels
    segfault inside some virtual machines (seen here with llama-cpp-python 0.3.36), and the whole
    process dies with no error to catch. `Llama()` has no keyword for this model parameter nor
    for the context's `cb_eval` (see app/hidden.py), so the default parameters are patched for
    the duration of the load only, under a lock.
    """
    module = llama_cpp.llama_cpp
    model_defaults, context_defaults = (
        module.llama_model_default_params,
        module.llama_context_default_params,
    )

    def model_params() -> llama_cpp.llama_model_params:
        chosen = model_defaults()
        chosen.use_extra_bufts = extra_buffers
        return chosen

    def context_params() -> llama_cpp.llama_context_params:
        chosen = context_defaults()
        chosen.cb_eval = eval_callback
        return chosen

    with _PARAMS_LOCK:
        module.llama_model_default_params = model_params
        module.llama_context_default_params = context_params
        try:
            yield
        finally:
            module.llama_model_default_params = model_defaults
            module.llama_context_default_params = context_defaults


def _shares(logits: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """Softmax of the logits over just these tokens: each one's share of the allowed mass."""
    scores = logits[list(tokens)].astype(np.float64)
    shares = np.exp(scores - scores.max())
    return shares / shares.sum()


def read_model_name(path: Path) -> str:
    """The name a loaded model will have (heads are keyed by it), reading only the vocabulary
    and metadata, not the weights."""
    _check_gguf_file(path)
    try:
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as error:
        raise ModelLoadError(f"llama.cpp could not read {path} ({error}).") from None
    try:
        return _model_name(llm.metadata, path)
    finally:
        llm.close()


def _model_name(metadata: dict[str, str], path: Path) -> str:
    return metadata.get("general.name") or path.stem


def _check_gguf_file(path: Path) -> None:
    if not path.is_file():
        raise ModelNotFound(f"Model file not found: {path}. Run: allinone download")
    with path.open("rb") as file:
        magic = file.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF model (it does not start with 'GGUF'). Give a .gguf file, "
            "or download one: allinone download"
        )
