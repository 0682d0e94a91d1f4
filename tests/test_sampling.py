"""The penalties written into the logits equal llama.cpp's own penalties sampler, bit for bit.

Why: `apply_penalties` replaces that sampler (which looks up every candidate of the vocabulary)
for speed, so a sampled reply must see exactly the logits it would have seen before.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from app.llm.sampling import PENALTY_WINDOW, Sampling, apply_penalties

VOCAB = 5_000


def llama_cpp_penalties(logits: np.ndarray, generated: list[int], sampling: Sampling) -> np.ndarray:
    """The row after llama.cpp's penalties sampler, having accepted `generated`."""
    sampler = llama_cpp.llama_sampler_init_penalties(
        VOCAB,
        PENALTY_WINDOW,
        sampling.repeat_penalty,
        sampling.frequency_penalty,
        sampling.presence_penalty,
    )
    try:
        for token in generated:
            llama_cpp.llama_sampler_accept(sampler, token)
        data = (llama_cpp.llama_token_data * VOCAB)()
        for token, logit in enumerate(logits.tolist()):
            data[token].id, data[token].logit, data[token].p = token, logit, 0.0
        candidates = llama_cpp.llama_token_data_array(data, VOCAB, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return np.array([data[token].logit for token in range(VOCAB)], dtype=np.float32)
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(
    ("repeat", "frequency", "presence"),
    [(1.1, 0.0, 0.0), (1.3, 0.0, 0.0), (1.0, 0.7, 1.5), (1.05, 1.2, -0.5), (0.9, -2.0, 2.0)],
)
def test_penalties_on_the_logits_equal_llama_cpps_sampler(repeat, frequency, presence):
    rng = np.random.default_rng(7)
    sampling = Sampling(
        repeat_penalty=repeat, frequency_penalty=frequency, presence_penalty=presence
    )
    # More tokens than the window, with repeats, so both the window and the counts matter.
    generated = [int(t) for t in rng.integers(0, 300, 150)]
    logits = (rng.standard_normal(VOCAB) * 8).astype(np.float32)
    logits[generated[-1]] = 0.0  # the <= 0 branch at its edge
    expected = llama_cpp_penalties(logits, generated, sampling)
    ours = logits.copy()
    apply_penalties(ours, generated, sampling)
    assert np.array_equal(ours, expected)
    assert not np.array_equal(ours, logits)  # the case did penalise something


def test_no_penalty_leaves_the_logits_alone():
    logits = np.arange(10, dtype=np.float32)
    apply_penalties(logits, [1, 2, 2], Sampling(repeat_penalty=1.0))
    assert np.array_equal(logits, np.arange(10, dtype=np.float32))
