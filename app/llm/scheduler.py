"""Continuous batching: several chat replies generated together, one token each per decode.

Why: one llama.cpp call that decodes one token for each of 4 replies costs less than 4 calls
(measured here on 2 cores: ~70 ms against ~26 ms for one), and a label request no longer waits
for a whole reply. So the engine hands its replies to this scheduler when `--parallel` is
above 1:

- it owns a second llama.cpp context over the same loaded weights with one KV stream per slot
  (`n_seq_max` = slots, `kv_unified=false`, each slot SLOT_CELLS cells, or the engine's context
  if smaller), so a reply's cells never mix with another's and it attends only to its own. A
  reply that does not fit a slot (a client's large tools block) is generated alone on the
  engine's context instead (app/llm/engine.py): a whole context per slot would cost 4x the KV
  for what few requests need, and one pool shared by the slots (`kv_unified`) made a reply
  decoded beside others differ from the same reply alone (measured: the greedy test fails);
- a worker thread runs steps while any reply is active. A new reply takes a free slot: its
  role prefix is copied from the engine's prefix cache into it (`llama_state_seq_set_data`),
  and the rest of its prompt is decoded there SLOT_BATCH tokens at a time, one chunk per turn
  of the worker, with a step of the replies already going between two chunks (they do not
  stall while 4 prompts are read, and a label waits for one chunk at most). Once its prompt is
  in, its first token is sampled and it joins the steps. Each step decodes the next token of
  every active reply in ONE call, and each reply samples its own next token from its row with
  its own sampler (app/llm/generation.py);
- a reply that ends, or whose consumer closed it, frees its slot at once; a waiting one takes it.
  The slot keeps its cells until it is needed: a conversation's next turn, whose prompt starts
  with the whole of the previous turn's, continues in that slot and decodes only the new
  message (as the engine's own context does with `--parallel 1`); any other prompt takes the
  slot freed longest ago;
- the engine's lock is taken per prompt chunk and per step, in arrival order (`FairLock`), so
  a label request waits for at most one of them, never for a whole reply or prompt.

Cost: slots x SLOT_CELLS cells x ~12 KB of KV for the Qwen2.5 0.5B models (4 x 2048 -> 96 MB) plus
the context's compute buffer, made at the first reply (the engine creates this lazily).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from llama_cpp import Llama

from app.llm.generation import Generation
from app.llm.lru import Lru
from app.llm.native import Batch, Context, StateBuffer, state_buffer
from app.llm.prompt import Prompt, common_prefix


class PrefixSource(Protocol):
    """What the scheduler needs of the engine: its lock, and a role prefix's saved KV."""

    lock: AbstractContextManager[Any]

    def prefix_kv(self, prompt: Prompt) -> bytes | None: ...


SLOT_BATCH = 128  # tokens per llama.cpp call in the slots' context
SLOT_CELLS = 2048  # KV cells per slot: a chat's prompt, its history and its reply
PREFIX_BUFFERS = 8  # role prefixes kept ready for the slots (~1.5 MB each for the 0.5B models)
_END = object()  # put on a reply's queue after its last piece


@dataclass(eq=False)
class _Reply:
    prompt: Prompt
    generation: Generation
    pieces: queue.SimpleQueue[Any]  # str pieces, then _END or an exception
    seq: int = -1
    held: list[int] = field(default_factory=list)  # the tokens in its KV stream, in order
    token: int = -1  # the sampled token the next step decodes
    filled: int = 0  # prompt tokens in its slot so far (being admitted while < len(prompt))
    kept: int = 0  # of those, the ones found there or restored (its cached tokens)
    fresh: bool = True  # seated, its slot's cells not yet set


@dataclass
class _Slot:
    """What a free slot's KV stream still holds from the reply that last used it."""

    prompt_len: int = 0  # that reply's prompt: a prompt that starts with it continues here
    held: list[int] = field(default_factory=list)


class Scheduler:
    """Up to `slots` replies decoded together on their own llama.cpp context."""

    def __init__(
        self, llm: Llama, engine: PrefixSource, *, slots: int, n_ctx: int, n_batch: int
    ) -> None:
        # Steps decode one token a slot; only a new prompt's rest is longer, read in chunks.
        # A smaller batch keeps the compute buffer (paid in RSS) small: ~300 MB at 512.
        self.n_batch = max(slots, min(n_batch, SLOT_BATCH))
        self._context = Context.beside(
            llm, n_ctx=slots * n_ctx, sequences=slots, n_batch=self.n_batch, watch_layers=False
        )
        self._engine = engine
        self._step_batch = Batch(self.n_batch)
        self.slots = slots
        self._slots = [_Slot() for _ in range(slots)]
        self._free = list(range(slots))  # the longest free first
        self._active: list[_Reply] = []  # generating; only the worker thread touches it
        self._admitting: list[_Reply] = []  # seated, their prompts read a chunk at a time
        self._waiting: deque[_Reply] = deque()
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._stream_count_at = self._find_stream_count()
        self._forget_slots = False
        self._prefix_buffers: Lru[tuple[int, ...], StateBuffer] = Lru(PREFIX_BUFFERS)

    def submit(self, prompt: Prompt, generation: Generation) -> Iterator[str]:
        """Queue a reply; its text pieces come out of the returned generator as they are made.
        Closing the generator (or `generation.out.close()` from any thread) frees its slot."""
        reply = _Reply(prompt, generation, queue.SimpleQueue())
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._waiting.append(reply)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="scheduler", daemon=True)
                self._worker.start()
            self._wake.notify()
        return self._pieces(reply)

    def _pieces(self, reply: _Reply) -> Iterator[str]:
        try:
            while True:
                item = reply.pieces.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if reply.generation.out.finish_reason is None:  # left early: stop generating
                reply.generation.out.cancelled = True
                with self._wake:
                    self._wake.notify()

    # -- the worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._busy() and not self._waiting:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self._drop_cancelled()  # first: a closed reply's slot goes to a waiting one now
                with self._wake:
                    while self._waiting and self._free:
                        self._seat(self._waiting.popleft())
                if self._admitting:  # one chunk of the oldest arrival's prompt...
                    self._admit_chunk(self._admitting[0])
                if self._active:  # ...then one token for every reply already going
                    self._step()
            except Exception as error:  # noqa: BLE001 - every waiting consumer must hear of it
                for reply in [*self._active, *self._admitting]:
                    reply.pieces.put(error)
                    self._release(reply, keep=False)
                self._active, self._admitting = [], []

    def _busy(self) -> bool:
        return bool(self._active or self._admitting)

    def _drop_cancelled(self) -> None:
        for reply in [r for r in self._active + self._admitting if r.generation.out.cancelled]:
            reply.pieces.put(_END)
            self._release(reply, keep=reply in self._active)

    def _seat(self, reply: _Reply) -> None:
        """Give an arrival a free slot; its prompt is then read a chunk per worker turn."""
        if reply.generation.out.cancelled:
            reply.pieces.put(_END)
            return
        reply.seq, reply.filled = self._take_slot(reply.prompt.tokens)
        self._admitting.append(reply)

    def _admit_chunk(self, reply: _Reply) -> None:
        """Decode the next SLOT_BATCH tokens of an arrival's prompt in its slot (first keeping
        the conversation's earlier turn there, or restoring the role prefix); once the prompt is
        in, sample its first token and let it join the steps.

        One chunk per lock hold, a step of the other replies between two chunks: a label
        request waits for one chunk at most, and replies already going do not stall while 4
        prompts are read. A prompt's chunks start where they start alone, so its KV (and a
        greedy reply) is the same either way.
        """
        tokens = reply.prompt.tokens
        with self._engine.lock:
            if reply.fresh:  # its first chunk: drop what the slot holds past the kept turn
                reply.fresh = False
                self._context.remove(reply.seq, reply.filled)
                if not reply.filled:
                    reply.filled = self._restore_prefix(reply)
                reply.kept = reply.filled
            start = reply.filled
            chunk = tokens[start : start + self.n_batch]
            for offset, token in enumerate(chunk):
                last = start + offset == len(tokens) - 1
                self._step_batch.put(offset, token, start + offset, reply.seq, last)
            self._decode(len(chunk))
            reply.filled += len(chunk)
            if reply.filled < len(tokens):
                return
            self._admitting.remove(reply)
            self._active.append(reply)
            reply.generation.out.cached_tokens = reply.kept
            reply.held = list(tokens)
            self._advance(reply, reply.generation.next(self._context, len(chunk) - 1, len(tokens)))

    def _take_slot(self, tokens: list[int]) -> tuple[int, int]:
        """A free slot for a prompt, and how many of its tokens that slot's cells already hold:
        the slot of the previous turn when the prompt continues it, else (holding nothing
        reusable, 0) one that keeps the busy slots in as few runs of neighbours as it can (a
        step decodes each run in a pass of its own: see `_step`), freed longest ago among
        those, and never the one freed last while another is free."""
        if self._forget_slots:  # its cells go when the slot is first filled (`_admit_chunk`)
            self._forget_slots = False
            for seq in self._free:
                self._slots[seq] = _Slot()
        for seq in self._free:
            slot = self._slots[seq]
            if (
                0 < slot.prompt_len < len(tokens)
                and tokens[: slot.prompt_len] == slot.held[: slot.prompt_len]
            ):
                self._free.remove(seq)
                return seq, min(common_prefix(slot.held, tokens), len(tokens) - 1)
        busy = {reply.seq for reply in self._active + self._admitting}
        # The slot freed last is left alone while another is free: its turn is the likeliest
        # to be continued. Ties: the slot freed longest ago.
        choices = self._free[:-1] or self._free
        seq = min(choices, key=lambda free: _runs(busy | {free}))
        self._free.remove(seq)
        return seq, 0

    def _restore_prefix(self, reply: _Reply) -> int:
        """Copy the role prefix's KV from the engine's prefix cache into the reply's slot;
        return how many prompt tokens that covers (0 if there is none or it was refused)."""
        prompt = reply.prompt
        buffer = self._prefix_buffer(prompt)
        if buffer is None:
            return 0
        if not self._context.restore(reply.seq, buffer):
            self._context.remove(reply.seq)
            return 0
        keep = min(prompt.prefix_len, len(prompt.tokens) - 1)  # the last token gives logits
        self._context.remove(reply.seq, keep)
        return keep

    def _prefix_buffer(self, prompt: Prompt) -> StateBuffer | None:
        """The prompt's prefix state, ready for `llama_state_seq_set_data` on this context.

        Kept for the last PREFIX_BUFFERS prefixes, so admitting a reply allocates nothing:
        a fresh 1.5 MB copy per reply made the server's RSS creep over a long soak.
        """
        prefix = prompt.prefix
        buffer = self._prefix_buffers.get(prefix)
        if buffer is None:
            state = self._engine.prefix_kv(prompt)
            if state is None:
                return None
            buffer = state_buffer(self._for_slots(state))
            self._prefix_buffers.put(prefix, buffer)
        return buffer

    def _for_slots(self, state: bytes) -> bytes:
        """A sequence state saved on the engine's context, in the layout this context reads.

        After a short header, llama.cpp writes a sequence's KV as the context's stream count
        (u32), then per stream its cell count (u32) and, if any, its cells
        (src/llama-kv-cache.cpp, `state_write`). The engine's context has one stream, this one
        a stream per slot, and llama.cpp refuses a state whose count differs ("n_stream
        mismatch") although a sequence's cells all go to its own stream. So the one stream's
        section gets this context's count, followed by empty sections. A state of any other
        shape is passed on unchanged: llama.cpp refuses it and the prefix is decoded instead.
        """
        at = self._stream_count_at
        if at is None or len(state) < at + 8 or state[at : at + 4] != (1).to_bytes(4, "little"):
            return state
        count = self.slots.to_bytes(4, "little")
        return state[:at] + count + state[at + 4 :] + bytes(4 * (self.slots - 1))

    def _find_stream_count(self) -> int | None:
        """Where the stream count sits in this llama.cpp's sequence states: an empty sequence's
        state is the header, the count, and one zero cell count per stream."""
        empty = self._context.save(0)
        at = len(empty) - 4 * (self.slots + 1)
        expected = self.slots.to_bytes(4, "little") + bytes(4 * self.slots)
        return at if at >= 0 and empty[at:] == expected else None

    def _step(self) -> None:
        """Decode one token for every active reply in one call, then sample each one's next.

        The rows go in slot order: with a KV stream per slot, llama.cpp puts only consecutive
        streams in one micro-batch (`split_equal`, src/llama-batch.cpp), so replies in slots
        1, 2, 3, 0 cost two passes over the weights, not one (measured: a step of 4 took 78 ms
        instead of 58), and so do replies in slots 0 and 2 (`_take_slot` avoids such gaps).
        """
        replies = sorted(self._active, key=lambda reply: reply.seq)
        with self._engine.lock:
            for index, reply in enumerate(replies):
                self._step_batch.put(index, reply.token, len(reply.held), reply.seq, True)
                reply.held.append(reply.token)
            self._decode(len(replies))
            for index, reply in enumerate(replies):
                self._advance(reply, reply.generation.next(self._context, index, len(reply.held)))

    def _advance(self, reply: _Reply, token: int | None) -> None:
        """Pass on the reply's ready text; end it (and free its slot) if no token follows."""
        for piece in reply.generation.take():
            reply.pieces.put(piece)
        if token is not None:
            reply.token = token
            return
        tail = reply.generation.finish()
        if tail:
            reply.pieces.put(tail)
        reply.pieces.put(_END)
        self._release(reply)

    def _release(self, reply: _Reply, *, keep: bool = True) -> None:
        """Free the reply's slot; its cells stay for the conversation's next turn unless
        `keep` is False (a failed decode may have left them half-written)."""
        if keep:
            self._slots[reply.seq] = _Slot(len(reply.prompt.tokens), reply.held)
        else:
            self._context.remove(reply.seq)
            self._slots[reply.seq] = _Slot()
        self._free.append(reply.seq)
        if reply in self._active:
            self._active.remove(reply)
        if reply in self._admitting:
            self._admitting.remove(reply)
        reply.seq = -1

    def _decode(self, n_tokens: int) -> None:
        try:
            self._context.decode(self._step_batch, n_tokens)
        except RuntimeError as error:
            raise RuntimeError(f"{error} in the parallel-reply context") from None

    def forget(self, *, prefixes: bool) -> None:
        """Let no free slot's cells be reused (a reply in progress keeps its own); with
        `prefixes`, drop the prefix states kept ready too. Call with the engine's lock held.
        Only the worker thread touches the slots: it clears them at its next admission."""
        self._forget_slots = True
        if prefixes:
            self._prefix_buffers.clear()

    def close(self) -> None:
        """Stop the worker (after its current step) and free the context."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout=30)
        for reply in [*self._active, *self._admitting, *self._waiting]:
            reply.pieces.put(RuntimeError("the engine was closed"))
        self._step_batch.free()
        self._context.close()


def _runs(seqs: set[int]) -> int:
    """How many runs of consecutive numbers `seqs` makes ({0, 1, 3}: 2)."""
    return sum(1 for seq in seqs if seq - 1 not in seqs)
