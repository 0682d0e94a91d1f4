"""A light learned head for a two-label role, on the model's own answer-position logits.

Why logits and not the hidden state: the logits are a linear map of the last hidden state (Qwen's
output layer has no bias), and the logits of a couple of thousand fixed tokens span all of its
dimensions, so a linear head on them can express any linear head on the hidden state. They are
already computed for every answer, so the head costs nothing at inference and needs no second
model or embeddings mode. The head is a standardised logistic regression trained on
reviews_train.csv only, stored as a small JSON file beside prompts.yaml, and tied to the exact
prompt it was trained under (a fingerprint), so editing the prompt without retraining is an
error, not a silent accuracy drop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import PromptsError


@dataclass(frozen=True)
class Head:
    labels: tuple[str, str]  # probability() is P(labels[0])
    token_ids: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    fingerprint: str
    note: str = ""

    def probability(self, logits: np.ndarray) -> float:
        z = (np.asarray(logits, dtype=np.float64) - self.mean) / self.scale
        score = float(z @ self.weights + self.bias)
        return float(1.0 / (1.0 + np.exp(-score)))

    def to_json(self) -> str:
        return json.dumps(
            {
                "labels": list(self.labels),
                "fingerprint": self.fingerprint,
                "note": self.note,
                "bias": self.bias,
                "token_ids": self.token_ids.astype(int).tolist(),
                "mean": np.round(self.mean, 5).tolist(),
                "scale": np.round(self.scale, 5).tolist(),
                "weights": np.round(self.weights, 6).tolist(),
            },
            ensure_ascii=False,
        )


def fingerprint(
    system: str, template: str, examples: Sequence[tuple[str, str]], labels: Sequence[str]
) -> str:
    """Identity of the prompt a head was trained under (what shapes its input logits)."""
    payload = json.dumps([system, template, list(examples), list(labels)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def load_head(path: Path, where: str) -> Head:
    """Read a head file; `where` names the role and field for error messages."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        n = len(raw["token_ids"])
        head = Head(
            labels=tuple(raw["labels"]),
            token_ids=np.asarray(raw["token_ids"], dtype=np.int64),
            mean=np.asarray(raw["mean"], dtype=np.float64),
            scale=np.asarray(raw["scale"], dtype=np.float64),
            weights=np.asarray(raw["weights"], dtype=np.float64),
            bias=float(raw["bias"]),
            fingerprint=str(raw["fingerprint"]),
            note=str(raw.get("note", "")),
        )
    except FileNotFoundError:
        raise PromptsError(f"{where}: head file {path} not found.") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PromptsError(f"{where}: head file {path} is not a valid head ({error}).") from None
    if len(head.labels) != 2 or not (len(head.mean) == len(head.scale) == len(head.weights) == n):
        raise PromptsError(f"{where}: head file {path} is inconsistent (sizes or labels).")
    return head


def fit(
    features: np.ndarray,
    targets: Sequence[int],
    token_ids: np.ndarray,
    labels: tuple[str, str],
    fingerprint_: str,
    *,
    c_grid: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1),
    report: Callable[[str], None] = print,
) -> Head:
    """Standardise, pick C by 5-fold cross-validation on the training rows, fit (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    scores = {}
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000)
        scores[c] = float(cross_val_score(model, z, y, cv=5).mean())
        report(f"C={c}: cross-validated accuracy {scores[c]:.4f}")
    best = max(scores, key=scores.__getitem__)
    model = LogisticRegression(C=best, max_iter=3000).fit(z, y)
    # sklearn's positive class is 1; we store P(labels[0]), so targets are 1 for labels[0].
    return Head(
        labels=labels,
        token_ids=np.asarray(token_ids, dtype=np.int64),
        mean=mean,
        scale=scale,
        weights=model.coef_[0].astype(np.float64),
        bias=float(model.intercept_[0]),
        fingerprint=fingerprint_,
        note=f"logistic regression, C={best}, {len(y)} training rows, "
        f"CV accuracy {scores[best]:.4f}",
    )
