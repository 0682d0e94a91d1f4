"""Embeddings on the real model: each vector comes from its own text, and meaning shows."""

import numpy as np
import pytest

pytestmark = pytest.mark.model


def test_texts_of_one_token_length_get_their_own_vectors(assistant):
    texts = ["今天天气很好", "今天阳光灿烂", "我很难过"]
    lengths = {len(assistant.engine.tokenize(text)) for text in texts}
    assert len(lengths) == 1, "the case that broke: texts of the same token length"
    vectors = assistant.embed(texts)
    assert vectors.shape == (3, assistant.engine.n_embd)
    cosines = vectors @ vectors.T
    assert np.all(cosines[np.triu_indices(3, 1)] < 0.999), "two texts share one vector"
    assert cosines[0, 1] > cosines[0, 2], "weather is nearer weather than sadness"


def test_a_text_alone_and_in_a_list_agree(assistant):
    alone = assistant.embed("今天天气很好")[0]
    listed = assistant.embed(["今天天气很好", "电池太差了", "我恨你"])[0]
    assert np.allclose(alone, listed, atol=1e-3)
