"""Embeddings from the one loaded model: a vector per text, with no second model loaded.

Why this way: the middle layers a head reads (app/roles/head.py) already carry what a text
means, so their mean hidden state over the text's tokens is a usable embedding. The text comes
after a fixed, cached system turn, so no text's first token is the sequence's first (whose
states are outliers that would dominate a mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.errors import InputError
from app.llm import Prompt
from app.roles.engine_like import EngineLike
from app.roles.head import default_layers, features
from app.roles.prompting import require_text

EMBED_SYSTEM = "阅读下面的文本。"


class Embedder:
    """Texts to L2-normalised vectors on the engine."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text (shape (len(texts), n_embd)): the mean hidden state
        over the text's tokens of the middle layers a head reads, averaged."""
        layers = default_layers(self.engine.n_layer)
        prompts = [
            self._prompt(require_text(text))
            for text in ([texts] if isinstance(texts, str) else texts)
        ]
        if not prompts:
            raise InputError("Give at least one text to embed.")
        rows = []
        for states in self.engine.read_states_many(prompts, layers):  # stops after the last
            vector = features(states)[states.shape[-1] // 2 :]  # the mean half, not the last
            rows.append(vector / (np.linalg.norm(vector) or 1.0))
        return np.stack(rows).astype(np.float32)

    def _prompt(self, text: str) -> Prompt:
        """The cached system turn, the user turn's opening, then the text and nothing after it
        (the template's tail would be the same in every vector).

        The text's tokens are found in the rendered prompt, not counted from the prefix: the
        user turn's opening (<|im_start|>user and a newline) stands between the two, and
        cutting at prefix + len(text) kept the opening instead of the text's end, so texts of
        one token length got one vector.
        """
        system = {"role": "system", "content": EMBED_SYSTEM}
        prompt = self.engine.chat_prompt(
            [system, {"role": "user", "content": text}], prefix_messages=1
        )
        wanted = self.engine.tokenize(text)
        tokens = prompt.tokens
        for start in range(prompt.prefix_len, len(tokens) - len(wanted) + 1):
            if tokens[start : start + len(wanted)] == wanted:
                end = start + len(wanted)
                return Prompt(tokens=tokens[:end], prefix_len=prompt.prefix_len)
        raise InputError("The model's chat template changed the text; it cannot be embedded.")
