"""Classification and latency metrics, in plain Python so they are easy to check by hand.

Accuracy, per-class precision/recall/F1, macro-F1, the confusion matrix, latency percentiles and
expected calibration error (ECE: how far "confidence 0.9" is from being right 90% of the time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    _same_length(gold, predicted)
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold) if gold else 0.0


def per_class(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, ClassScores]:
    _same_length(gold, predicted)
    scores = {}
    for label in labels:
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = ClassScores(precision, recall, f1, tp + fn)
    return scores


def macro_f1(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    scores = per_class(gold, predicted, labels)
    return sum(score.f1 for score in scores.values()) / len(labels)


def confusion(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """rows = gold label, columns = predicted label, in `labels` order."""
    _same_length(gold, predicted)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g]][index[p]] += 1
    return matrix


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    _same_length(confidences, correct)
    total = len(confidences)
    if not total:
        return 0.0
    error = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low < c <= high or (b == 0 and c == low)]
        if members:
            hit_rate = sum(correct[i] for i in members) / len(members)
            mean_confidence = sum(confidences[i] for i in members) / len(members)
            error += len(members) / total * abs(hit_rate - mean_confidence)
    return error


def _same_length(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")
