"""A light learned head for a two-label role, on the model's own middle-layer hidden states.

Why middle layers: what a small model knows about a text's sentiment is clearest halfway up;
the last layers specialise in predicting the next token. Cross-validated on reviews_train.csv,
a linear head on layers 13-17 or 14-18 of the 24 scores 0.85-0.87, one on the answer-position
logits 0.83.
The states come from the one decode the label needs anyway (app/hidden.py), so the head costs
no extra model run. Features: per layer, the last prompt token's state and the mean state of
the tokens after the cached prefix (the text and the template's tail), averaged over the
layers. The head is a standardised logistic regression trained on reviews_train.csv only,
stored as a small JSON file beside prompts.yaml, and tied to the exact prompt (a fingerprint)
and model it was trained with: editing the prompt without retraining is an error, and another
model falls back to the label logits, never to a silent accuracy drop.
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
    layers: tuple[int, ...]
    model: str  # the GGUF's general.name the features came from
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    fingerprint: str
    note: str = ""

    def probability(self, states: np.ndarray) -> float:
        """P(labels[0]) from the engine's per-layer states, shape (len(layers), features)."""
        z = (features(states) - self.mean) / self.scale
        score = float(z @ self.weights + self.bias)
        return float(1.0 / (1.0 + np.exp(-score)))

    def to_json(self) -> str:
        return json.dumps(
            {
                "labels": list(self.labels),
                "fingerprint": self.fingerprint,
                "note": self.note,
                "model": self.model,
                "layers": list(self.layers),
                "bias": self.bias,
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
        head = Head(
            labels=tuple(raw["labels"]),
            layers=tuple(int(layer) for layer in raw["layers"]),
            model=str(raw["model"]),
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
    sizes = {len(head.mean), len(head.scale), len(head.weights)}
    if len(head.labels) != 2 or not head.layers or len(sizes) != 1:
        raise PromptsError(f"{where}: head file {path} is inconsistent (sizes or labels).")
    return head


def check_fits(head: Head, middle_layers: range, n_embd: int, role: str, where: str) -> None:
    """Refuse, at load time, a head the loaded model cannot feed (a hand-edited or truncated
    file): its layers must be the model's `middle_layers` and its width twice the model's."""
    outside = [layer for layer in head.layers if layer not in middle_layers]
    if outside:
        raise PromptsError(
            f"{where}: the head reads layers {outside}, but this model's middle layers are "
            f"0-{middle_layers[-1]}. Retrain it: allinone train-head --role {role}"
        )
    if len(head.weights) != 2 * n_embd:
        raise PromptsError(
            f"{where}: the head takes {len(head.weights)} features, but this model gives "
            f"{2 * n_embd}. Retrain it: allinone train-head --role {role}"
        )


def default_layers(n_layer: int) -> tuple[int, ...]:
    """The layers a new head reads: 13-17 of 24 on the 0.5B models (as accurate as any band
    measured, and early exit stops the pass after 17: scripts/head_study.py), the same share
    of the way up for a model of another depth."""
    first, last = round(n_layer * 13 / 24), round(n_layer * 17 / 24)
    return tuple(range(first, min(last, n_layer - 2) + 1))


def features(states: np.ndarray) -> np.ndarray:
    """One row of head features from per-layer states: their average over the layers."""
    return np.asarray(states, dtype=np.float64).mean(axis=-2)


def fit(
    states: np.ndarray,
    targets: Sequence[int],
    labels: tuple[str, str],
    layers: Sequence[int],
    model_name: str,
    fingerprint_: str,
    *,
    c_grid: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1),
    report: Callable[[str], None] = print,
) -> Head:
    """Standardise, pick C by 5-fold cross-validation on the training rows, fit (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = features(states)
    y = np.asarray(targets)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    scores = {}
    for c in c_grid:
        scores[c] = float(cross_val_score(LogisticRegression(C=c, max_iter=3000), z, y).mean())
        report(f"C={c}: cross-validated accuracy {scores[c]:.4f}")
    best = max(scores, key=scores.__getitem__)
    regression = LogisticRegression(C=best, max_iter=3000).fit(z, y)
    # sklearn's positive class is 1; we store P(labels[0]), so targets are 1 for labels[0].
    return Head(
        labels=labels,
        layers=tuple(layers),
        model=model_name,
        mean=mean,
        scale=scale,
        weights=regression.coef_[0].astype(np.float64),
        bias=float(regression.intercept_[0]),
        fingerprint=fingerprint_,
        note=f"logistic regression, C={best}, {len(y)} training rows, "
        f"CV accuracy {scores[best]:.4f}",
    )
