"""How each generated token is picked: the settings of one request, turned into a sampler chain.

Why its own module: a reply sampled alone and one sampled among the scheduler's slots must build
exactly the same chain from the same settings, and the OpenAI server, the CLI and the roles all
speak in these settings. Log-probabilities are computed here too, from the raw logits, as OpenAI
and llama.cpp report them (before any sampling filter changes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from llama_cpp import Llama

from app.errors import InputError
from app.llm.completion import TokenLogprob
from app.llm.native import Sampler, Vocab

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
    banned: tuple[tuple[int, ...], ...] = ()  # token sequences never completed (app/llm/bans.py)
    no_repeat: int = 0  # no run of this many tokens twice in the reply (0: off)
    # OpenAI's penalties, applied by llama.cpp's penalties sampler over the last
    # PENALTY_WINDOW tokens generated: logit - count * frequency - (count > 0) * presence.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str = ""  # GBNF the reply must match (JSON mode, forced tool calls); "" for none
    top_logprobs: int | None = None  # None: no logprobs; n: each token's and n alternatives
    # Never end at an end-of-turn or control token: run to max_tokens (as llama.cpp's
    # `ignore_eos`). For measuring: every reply of a speed run is then the same length.
    ignore_eos: bool = False


def build_sampler(llm: Llama, sampling: Sampling) -> Sampler:
    """The sampler chain: the grammar first (it removes what the grammar forbids before
    anything else looks at the candidates), then penalties, then top-k / top-p / temperature
    and the seeded draw, or greedy."""
    sampler = Sampler()
    if sampling.grammar:
        try:
            sampler.grammar(llm, sampling.grammar)
        except ValueError:
            raise InputError(
                "llama.cpp could not parse the grammar built for this request."
            ) from None
    penalties = (sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty)
    if penalties != (1.0, 0.0, 0.0):
        sampler.penalties(llm.n_vocab(), PENALTY_WINDOW, *penalties)
    if sampling.temperature <= 0:
        return sampler.greedy()
    return sampler.random(
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        temperature=sampling.temperature,
        seed=sampling.seed,
    )


def logprob(vocab: Vocab, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """`token`'s log-softmax over the raw logits, with the `top` most likely tokens."""
    scores = logits.astype(np.float64)
    peak = scores.max()
    log_total = peak + np.log(np.exp(scores - peak).sum())
    best = np.argpartition(-scores, top)[:top] if top else np.array([], dtype=np.int64)
    best = best[np.argsort(-scores[best])]

    def entry(t: int, value: float) -> TokenLogprob:
        piece = vocab.piece(t)
        return TokenLogprob(piece.decode("utf-8", errors="replace"), float(value), piece)

    alternatives = tuple(entry(int(t), scores[t] - log_total) for t in best)
    return replace(entry(token, scores[token] - log_total), top=alternatives)


def shares(logits: np.ndarray, tokens: Sequence[int]) -> np.ndarray:
    """Softmax of the logits over just these tokens: each one's share of the allowed mass."""
    scores = logits[list(tokens)].astype(np.float64)
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()
