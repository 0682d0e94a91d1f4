"""The example bank: few-shot turns picked per message, by the model's own reading of it.

Why: a 0.5B model copies the style and the situation of the examples it is shown more than it
follows rules. Fixed examples pull every reply toward their situation (a celebration example
once answered insomnia with "值得好好庆祝一下"). A bank of short exchanges written for this
project, each with its topic and mood, lets each message see the exchanges closest to it.

"Closest" costs no extra model run: the mood step already decodes the message with the steering
role and copies middle-layer hidden states for its head (app/llm/hidden.py). Those states, pooled
as the head's features, are the message's vector. The bank's inputs are read the same way once
per model (app/roles/bank_cache.py; for Qwen2.5-Coder-0.5B they ship in banks/vectors/), and
the vectors are kept in a cache file keyed by model, bank, prompt and layers. Vectors are
standardised by the bank's own mean and spread and compared by cosine. Only exchanges of the
verdict's mood, or of no mood the steering role knows (e.g. 中性 questions), are candidates: a
sad message is never shown a celebration.

What it costs: shown turns must be decoded before the reply (~75 tokens each, ~0.3 s each on 2
cores). So the shots are chosen per group (topic x mood), not per message: the nearest
exchanges vote for a group, and the group's most typical exchanges are shown. Each group's
prompt prefix is then always the same, so it is decoded once per model (the first time the
group is answered) and its KV state kept on disk (a few MB a group); later replies restore it
in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.atomic import atomic_open
from app.errors import PromptsError

VOTERS = 5  # nearest exchanges that vote for the group a message belongs to


class Exchange(BaseModel):
    """One user message and the reply we want for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = ""
    mood: str = Field(min_length=1)
    input: str = Field(min_length=1)
    output: str = Field(min_length=1)


class ExampleBank:
    """The exchanges of one bank file, and (once `index` ran) one unit vector per exchange."""

    def __init__(self, path: Path, exchanges: Sequence[Exchange], digest: str) -> None:
        self.path = path
        self.exchanges = tuple(exchanges)
        self.digest = digest  # identity of the file's content, part of the cache key
        self._vectors: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._typical: dict[tuple[str, str], list[int]] = {}

    @property
    def indexed(self) -> bool:
        return self._vectors is not None

    def index(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        cache: Path | None = None,
        shipped: Path | None = None,
    ) -> None:
        """Read every exchange's input into a vector with `embed` (rows of features), or load
        them from `cache` when a previous run wrote it for the same key, or from `shipped`
        (read only: the vectors made for a catalog model, shipped beside the bank)."""
        for kept in (cache, shipped):
            raw = _load(kept, len(self.exchanges)) if kept is not None else None
            if raw is not None:
                self._set(raw)
                return
        raw = np.asarray(embed([exchange.input for exchange in self.exchanges]), dtype=np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(cache, "wb") as out:  # a killed run never leaves half a cache
                np.save(out, raw)
        self._set(raw)

    def _set(self, raw: np.ndarray) -> None:
        self._mean = raw.mean(axis=0)
        self._scale = raw.std(axis=0) + 1e-6
        self._vectors = _unit((raw - self._mean) / self._scale)
        members: dict[tuple[str, str], list[int]] = {}
        for i, exchange in enumerate(self.exchanges):
            members.setdefault(_group(exchange), []).append(i)
        self._typical = {}  # group -> its exchanges, closest to the group's centre first
        for group, indices in members.items():
            centre = _unit(self._vectors[indices].mean(axis=0))
            closeness = self._vectors[indices] @ centre
            self._typical[group] = [indices[j] for j in np.argsort(-closeness, kind="stable")]

    def shots(
        self, features: np.ndarray, k: int, mood: str | None, known_moods: Sequence[str]
    ) -> list[Exchange]:
        """The few-shot turns for a message: the `k` most typical exchanges of the group (topic
        and mood) that its nearest exchanges belong to, the most typical last (nearest the
        user's own turn). Candidates are the exchanges of `mood`, or of a mood the steering
        role does not know (every exchange when `mood` is None: the verdict is unsure). Per
        group, not per message, so that each group's prompt prefix is decoded once and then
        restored from the engine's prefix cache."""
        if self._vectors is None or self._mean is None or self._scale is None:
            raise RuntimeError("ExampleBank.index() must run before shots()")
        query = _unit((np.asarray(features, dtype=np.float32) - self._mean) / self._scale)
        allowed = [
            i
            for i, exchange in enumerate(self.exchanges)
            if mood is None or exchange.mood == mood or exchange.mood not in known_moods
        ]
        if not allowed:
            return []
        scores = self._vectors[allowed] @ query
        votes: dict[tuple[str, str], float] = {}
        for i in np.argsort(-scores, kind="stable")[:VOTERS]:
            group = _group(self.exchanges[allowed[i]])
            votes[group] = votes.get(group, 0.0) + float(scores[i])
        best = max(votes, key=votes.__getitem__)
        return [self.exchanges[i] for i in reversed(self._typical[best][:k])]

    def groups(self, k: int) -> list[list[Exchange]]:
        """Every group's shots as `shots` returns them: what a reply's prompt can start with."""
        if not self._typical:
            raise RuntimeError("ExampleBank.index() must run before groups()")
        return [[self.exchanges[i] for i in reversed(t[:k])] for t in self._typical.values()]

    def cache_key(self, *parts: object) -> str:
        payload = json.dumps([self.digest, *map(str, parts)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def load_bank(path: Path, where: str) -> ExampleBank:
    """Read and validate a bank file; errors name the file and the exchange."""
    try:
        data = path.read_bytes()
        raw = yaml.safe_load(data.decode("utf-8"))
    except FileNotFoundError:
        raise PromptsError(f"{where}: bank file not found: {path}.") from None
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise PromptsError(f"{where}: {path} is not valid UTF-8 YAML ({error}).") from None
    items = raw.get("exchanges") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise PromptsError(f"{where}: {path}: expected a non-empty 'exchanges:' list.")
    exchanges = []
    for number, item in enumerate(items, start=1):
        try:
            exchanges.append(Exchange(**item) if isinstance(item, dict) else Exchange())
        except (ValidationError, TypeError) as error:
            problems = (
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
                if isinstance(error, ValidationError)
                else str(error)
            )
            raise PromptsError(f"{where}: {path}: exchange {number}: {problems}.") from None
    return ExampleBank(path, exchanges, hashlib.sha256(data).hexdigest()[:16])


def _load(path: Path, rows: int) -> np.ndarray | None:
    """Vectors kept in `path`, or None when it is missing, unreadable or of another bank."""
    try:
        raw = np.load(path) if path.is_file() else None
    except (OSError, ValueError):
        return None  # unreadable cache: compute again and overwrite it
    return raw if raw is not None and raw.shape[0] == rows else None


def _group(exchange: Exchange) -> tuple[str, str]:
    return (exchange.topic, exchange.mood)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-9)
