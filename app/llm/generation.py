"""One reply being sampled, token by token: everything between two llama.cpp decodes.

Why its own module: a reply is generated either alone on the engine's context (`--parallel 1`)
or as one stream among several decoded together (app/llm/scheduler.py). Both must honour the same
per-request settings (seed, temperature, penalties, grammar, stop strings, banned phrases, the
sentence limit, logprobs, the token budget), so that logic lives here once. A `Generation` never
calls llama.cpp's decode: its owner decodes, then asks it for the next token from the logits of
one row of that decode (`next`), and passes on the text it has made ready (`take`).
"""

from __future__ import annotations

import codecs
import weakref
from dataclasses import dataclass

import numpy as np

from app.llm.bans import Ban
from app.llm.completion import Completion
from app.llm.native import Context, Sampler, Vocab
from app.llm.sampling import Sampling, apply_penalties, logprob


@dataclass
class Tally:
    """Tokens sampled by every reply since the model was loaded (benchmarks read it)."""

    tokens: int = 0


class Generation:
    """The sampling state of one reply; its text goes out through `take()` and `finish()`."""

    def __init__(
        self,
        vocab: Vocab,
        n_ctx: int,
        sampling: Sampling,
        sampler: Sampler,
        budget: int,
        out: Completion,
        tally: Tally,
    ) -> None:
        self._vocab = vocab
        self._n_ctx = n_ctx
        self._tally = tally
        self._sampling = sampling
        self._sampler = sampler
        self._budget = budget
        # Weak: the reader's Completion holds this reply's generator, which holds this. A strong
        # link back would make a cycle only the cyclic GC frees, so a reply dropped mid-stream
        # (a `break` out of the loop) would keep the model until then: with `--parallel 1` its
        # lock, so the reader's next call hung; with slots, it generated on to its token limit.
        self._out = weakref.ref(out)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in sampling.stop if s)
        self._ban = Ban(sampling.banned)
        if sampling.ignore_eos:  # ends are never drawn: the reply runs to its budget
            for token in vocab.enders():
                self._ban.add((token,))
        self._generated: list[int] = []
        self._sentences = SentenceCount(sampling.max_sentences)
        self._pending = ""
        self._ready: list[str] = []
        self._finish: str = "length"

    @property
    def out(self) -> Completion:
        """The reader's Completion; once the reader has dropped it, a cancelled stand-in (so
        the reply stops at its next token and frees what it holds)."""
        out = self._out()
        if out is None:
            out = Completion(0)
            out.cancelled = True
        return out

    def next(self, context: Context, row: int, position: int) -> int | None:
        """Sample from row `row` of the last decode of `context`; return the token to decode
        next (at `position` of this reply's sequence), or None once the reply has ended.

        Called with the engine's lock held (the logits and the token texts are shared).
        """
        if self.out.cancelled:
            return None
        sampling = self._sampling
        logits = context.logits(row)
        # The model's own distribution, before bans and sampling filters change it.
        raw = logits.copy() if sampling.top_logprobs is not None else None
        apply_penalties(logits, self._generated, sampling)
        self.apply_bans(logits)
        token = context.sample(self._sampler, row)
        if self._vocab.ends_reply(token):
            self._finish = "stop"
            return None
        self._tally.tokens += 1
        self.out.completion_tokens += 1
        if raw is not None:
            top = sampling.top_logprobs or 0
            self.out.logprobs.append(logprob(self._vocab, raw, token, top))
        self._generated.append(token)
        if sampling.no_repeat >= 2 and len(self._generated) >= sampling.no_repeat:
            self._ban.add(self._generated[-sampling.no_repeat :])
        piece = self._decoder.decode(self._vocab.piece(token))
        self._pending += piece
        cut = find_stop(self._pending, self._stops)
        enough = self._sentences.after(piece)
        if enough is not None:  # the last sentence asked for ended: cut what follows
            end = len(self._pending) - enough
            cut = end if cut is None else min(cut, end)
        if cut is not None:
            self._pending = self._pending[:cut]
            self._finish = "stop"
            return None
        # Text that could be the start of a stop string is held back until it is not; the
        # rest goes now (holding a fixed stop-length tail delayed every first piece a token).
        split = len(self._pending) - could_start_stop(self._pending, self._stops)
        if split > 0:
            self._ready.append(self._pending[:split])
            self._pending = self._pending[split:]
        if len(self._generated) >= self._budget or position + 1 >= self._n_ctx:
            return None
        return token

    def apply_bans(self, logits: np.ndarray) -> None:
        """-inf for every token a guard forbids next: the sampler reads these logits, so a
        banned token cannot be drawn."""
        banned = self._ban.banned_after(self._generated) if self._ban else ()
        if banned:
            logits[list(banned)] = -np.inf

    def take(self) -> list[str]:
        """The text pieces made ready since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def finish(self) -> str:
        """The held-back tail of an ended reply; sets why it ended (unless it was cancelled,
        which leaves `finish_reason` None, as a closed stream always has)."""
        if self.out.cancelled:
            return ""
        pending = self._pending + self._decoder.decode(b"", final=True)
        cut = find_stop(pending, self._stops)
        if cut is not None:
            pending = pending[:cut]
            self._finish = "stop"
        self.out.finish_reason = self._finish  # type: ignore[assignment]
        return pending


_SENTENCE_ENDS = "。！？!?"
_CLOSERS = "”’」』）)"  # a closing quote or bracket right after the end mark belongs to it


class SentenceCount:
    """Counts sentence ends in generated text, to stop after the `limit`-th (0: never).

    A run of end marks ("！！", "？！") ends one sentence; an ellipsis (……) ends none.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._in_run = False

    def after(self, piece: str) -> int | None:
        """Feed the next piece; when the limit's sentence ends inside it, how many of its
        characters come after that sentence's end marks (to cut them); else None."""
        if not self.limit:
            return None
        for index, char in enumerate(piece):
            if char in _SENTENCE_ENDS or (self._in_run and char in _CLOSERS):
                self._in_run = True
                continue
            if self._in_run:
                self._in_run = False
                self.count += 1
                if self.count >= self.limit:
                    return len(piece) - index
        return None


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(stop) for stop in stops if stop in text]
    return min(positions) if positions else None


def could_start_stop(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of `text` that a stop string starts with (0: none),
    i.e. what must wait for the next piece before it can be sent."""
    longest = min(len(text), max((len(stop) for stop in stops), default=1) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0
