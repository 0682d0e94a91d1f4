"""The engine: the ONE llama.cpp model, loaded once and shared by every role.

It knows tokens, not roles: evaluate a prompt (restoring a cached prefix when one matches), pick
one of a closed set of labels with its probability, read middle-layer states, or stream generated
text. This class only composes the parts, each in its own module:

- app/llm/kv.py: the prefix KV cache on the engine's own context;
- app/llm/labels.py: label choice from the logits, hidden states, several texts a call;
- app/llm/template.py and app/llm/tokens.py: the chat template and the tokenizer;
- app/llm/generation.py and app/llm/scheduler.py: one reply's sampling, and replies decoded
  together in slots;
- app/llm/native.py: every low-level llama.cpp call.

One lock: a llama.cpp context is not thread-safe; every call holds the lock. With `parallel`
above 1, replies go to the scheduler, which decodes them together and takes the lock per step, so
labels are served between two steps; with 1, a reply holds it until it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.llm.completion import Completion
from app.llm.fair_lock import FairLock
from app.llm.generation import Generation, Tally
from app.llm.hidden import LayerTap
from app.llm.kv import PrefixKV
from app.llm.labels import LabelReader
from app.llm.loading import load_model, model_name
from app.llm.native import Sampler, layer_count
from app.llm.prompt import Prompt
from app.llm.sampling import Sampling, build_sampler
from app.llm.scheduler import SLOT_CELLS, Scheduler
from app.llm.template import ChatTemplate
from app.llm.tokens import Tokenizer

log = logging.getLogger("allinone.engine")


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
        started = time.perf_counter()
        self.tap = LayerTap()  # middle-layer reads, installed as the context's eval callback
        self.llm = load_model(
            self.model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            extra_buffers=extra_buffers,
            eval_callback=self.tap.callback,
            verbose=verbose,
        )
        self.load_seconds = time.perf_counter() - started
        llm = self.llm
        self.n_ctx, self.n_vocab, self.n_embd = llm.n_ctx(), llm.n_vocab(), llm.n_embd()
        self.n_batch = llm.n_batch
        self.n_threads = n_threads
        self.n_layer = layer_count(llm)
        self.lock = FairLock()  # granted in arrival order: see app/llm/fair_lock.py
        self.tokens = Tokenizer(llm)
        self.template = ChatTemplate(
            self.tokens,
            llm.metadata.get("tokenizer.chat_template"),
            eos=self.tokens.vocab.text(llm.token_eos()),
            bos=self.tokens.vocab.text(llm.token_bos()),
        )
        self.supports_tools = self.template.supports_tools
        self.kv = PrefixKV(llm, self.tap)
        self.labels = LabelReader(llm, self.kv, self.tokens, self.tap, self.lock)
        self.middle_layers = self.labels.middle_layers
        self.tally = Tally()  # tokens sampled by every reply since the load, for benchmarks
        # Replies generated together (app/llm/scheduler.py), its context made at the first
        # reply so a process that only labels never pays for it; with 1, each reply runs alone
        # on the engine's own context, holding the lock until it ends.
        self.parallel = parallel
        self.scheduler: Scheduler | None = None

    @property
    def model_name(self) -> str:
        return model_name(self.llm.metadata, self.model_path)

    @property
    def generated_tokens(self) -> int:
        return self.tally.tokens

    # -- tokens and prompts ----------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.tokens.tokenize(text, special=special)

    def piece(self, token: int) -> bytes:
        return self.tokens.piece(token)

    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]:
        return self.tokens.phrase_tokens(phrases)

    def chat_prompt(self, messages: Sequence[dict[str, Any]], **options: Any) -> Prompt:
        """Messages through the model's chat template (see `ChatTemplate.render`)."""
        return self.template.render(messages, **options)

    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None:
        self.kv.check_fits(prompt, reserve)

    # -- labels and states ---------------------------------------------------------------

    def choose(
        self, prompt: Prompt, labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> tuple[list[float], np.ndarray]:
        return self.labels.choose(prompt, labels, layers=layers)

    def choose_many(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> list[tuple[list[float], np.ndarray]]:
        return self.labels.choose_many(prompts, labels, layers=layers)

    def read_states(self, prompt: Prompt, layers: Sequence[int]) -> np.ndarray:
        return self.labels.read_states(prompt, layers)

    def opening_probability(self, prompt: Prompt, openings: Sequence[str]) -> tuple[float, int]:
        return self.labels.opening_probability(prompt, openings)

    def read_states_many(
        self, prompts: Sequence[Prompt], layers: Sequence[int]
    ) -> list[np.ndarray]:
        return self.labels.read_states_many(prompts, layers)

    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str:
        return self.labels.choose_with_grammar(prompt, grammar, labels)

    # -- streaming generation ------------------------------------------------------------

    def stream(self, prompt: Prompt, sampling: Sampling, *, reply_start: str = "") -> Completion:
        """Generate a reply: a `Completion` yielding text pieces as they are generated; it stops
        at end-of-turn, a stop string, the grammar's end or the token limit.

        Control tokens (end of turn, role markers) end the reply and are never shown. With
        `parallel` above 1 the reply joins the scheduler's next step; otherwise the lock is held
        from the first piece until the generator finishes or is closed. The sampler is built
        here, so a grammar llama.cpp cannot parse is an error now, not mid-stream.
        """
        self.check_fits(prompt, reserve=1)
        budget = min(sampling.max_tokens, self.n_ctx - len(prompt.tokens))
        completion = Completion(len(prompt.tokens), reply_start=reply_start)
        sampler = build_sampler(self.llm, sampling)
        generation = Generation(
            self.tokens.vocab, self.n_ctx, sampling, sampler, budget, completion, self.tally
        )
        if self.parallel > 1 and len(prompt.tokens) + budget <= self.slot_cells:
            return completion.run(self._replies_together().submit(prompt, generation))
        if self.parallel > 1:
            log.info(
                "a reply of up to %d tokens after a %d-token prompt does not fit a slot (%d "
                "cells): it is generated alone on the engine's context, other replies wait",
                budget,
                len(prompt.tokens),
                self.slot_cells,
            )
        return completion.run(self._generate(prompt, generation))

    @property
    def slot_cells(self) -> int:
        """KV cells of each reply slot: the context, up to SLOT_CELLS (app/llm/scheduler.py)."""
        return min(self.n_ctx, SLOT_CELLS)

    def _replies_together(self) -> Scheduler:
        with self.lock:
            if self.scheduler is None:
                self.scheduler = Scheduler(
                    self.llm,
                    self,
                    slots=self.parallel,
                    n_ctx=self.slot_cells,
                    n_batch=self.n_batch,
                )
            return self.scheduler

    def _generate(self, prompt: Prompt, generation: Generation) -> Iterator[str]:
        """One reply alone on the engine's context (`parallel` 1), the lock held throughout."""
        kv = self.kv
        with self.lock:
            generation.out.cached_tokens = kv.evaluate(prompt, exact=False)
            token = generation.next(kv.context, -1, kv.n_tokens)
            while True:
                yield from generation.take()
                if token is None:
                    break
                kv.decode([token])
                token = generation.next(kv.context, -1, kv.n_tokens)
            tail = generation.finish()
            if tail:
                yield tail

    def greedy_steps(self, steps: int) -> None:
        """Decode `steps` greedy tokens after what the context holds, with nothing else done:
        the raw generation speed that benchmarks set a reply beside."""
        sampler = Sampler().greedy()
        with self.lock:
            for _ in range(steps):
                self.kv.decode([self.kv.context.sample(sampler, -1)])

    # -- the prefix cache ----------------------------------------------------------------

    def prefix_kv(self, prompt: Prompt) -> bytes | None:
        """A chat prompt's prefix KV for a reply slot (call with the lock held)."""
        return self.kv.prefix_kv(prompt)

    def prefix_state(self, prompt: Prompt) -> bytes:
        """The KV state of `prompt`'s cacheable prefix (decoded now unless already kept), for a
        caller that keeps it across processes (the example bank's groups)."""
        with self.lock:
            return self.kv.prefix_state(prompt)

    def offer_prefix_state(self, prompt: Prompt, state: bytes) -> bool:
        with self.lock:
            return self.kv.offer(prompt, state)

    def holds_prefix(self, prompt: Prompt) -> bool:
        return self.kv.holds(prompt)

    def forget(self, *, prefixes: bool = False) -> None:
        """Empty the KV cache (and the free reply slots' cells), e.g. to time a cold prompt;
        with `prefixes`, the saved prefix states too, so the next prompt is evaluated as in a
        fresh process."""
        with self.lock:
            self.kv.forget(prefixes=prefixes)
            if self.scheduler is not None:
                self.scheduler.forget(prefixes=prefixes)

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        with self.lock:
            self.kv.forget(prefixes=True)
            self.labels.close()
            self.llm.close()
