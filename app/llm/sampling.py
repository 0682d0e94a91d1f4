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
    # OpenAI's penalties over the last PENALTY_WINDOW tokens generated, as llama.cpp's
    # penalties sampler computes them: logit - count * frequency - (count > 0) * presence.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str = ""  # GBNF the reply must match (JSON mode, forced tool calls); "" for none
    top_logprobs: int | None = None  # None: no logprobs; n: each token's and n alternatives
    # Never end at an end-of-turn or control token: run to max_tokens (as llama.cpp's
    # `ignore_eos`). For measuring: every reply of a speed run is then the same length.
    ignore_eos: bool = False


def build_sampler(llm: Llama, sampling: Sampling) -> Sampler:
    """The sampler chain: the grammar first (it removes what the grammar forbids before
    anything else looks at the candidates), then top-k / top-p / temperature and the seeded
    draw, or greedy. The penalties come before the chain, on the logits (`apply_penalties`)."""
    sampler = Sampler()
    if sampling.grammar:
        try:
            sampler.grammar(llm, sampling.grammar)
        except ValueError:
            raise InputError(
                "llama.cpp could not parse the grammar built for this request."
            ) from None
    if sampling.temperature <= 0:
        return sampler.greedy()
    return sampler.random(
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        temperature=sampling.temperature,
        seed=sampling.seed,
    )


def apply_penalties(logits: np.ndarray, generated: Sequence[int], sampling: Sampling) -> None:
    """The repeat, frequency and presence penalties, written into the logits row in place,
    for the tokens among the last PENALTY_WINDOW generated.

    Why not llama.cpp's penalties sampler: it looks every one of the vocabulary's candidates
    up in a hash map, ~0.5 ms a token (5% of a 4-reply step), to change at most 64 of them.
    This is its arithmetic in float32, on those tokens only, so the logits come out the same.
    """
    repeat = np.float32(sampling.repeat_penalty)
    frequency = np.float32(sampling.frequency_penalty)
    presence = np.float32(sampling.presence_penalty)
    if not generated or (repeat, frequency, presence) == (1, 0, 0):
        return
    tokens, counts = np.unique(np.asarray(generated[-PENALTY_WINDOW:]), return_counts=True)
    values = logits[tokens]
    values = np.where(values <= 0, values * repeat, values / repeat)
    values -= counts.astype(np.float32) * frequency + presence  # every count here is > 0
    logits[tokens] = values


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
