"""Metric code on hand-made cases whose answers are worked out by hand."""

import numpy as np
import pytest

from app.measure import metrics

L = ("正面", "负面")
GOLD = ["正面", "正面", "正面", "负面", "负面"]
PRED = ["正面", "负面", "正面", "负面", "正面"]


def test_accuracy():
    assert metrics.accuracy(GOLD, PRED) == pytest.approx(3 / 5)


def test_per_class_precision_recall_f1():
    scores = metrics.per_class(GOLD, PRED, L)
    # 正面: tp=2, fp=1, fn=1 -> P=2/3, R=2/3; 负面: tp=1, fp=1, fn=1 -> P=1/2, R=1/2
    assert scores["正面"].precision == pytest.approx(2 / 3)
    assert scores["正面"].recall == pytest.approx(2 / 3)
    assert scores["负面"].f1 == pytest.approx(0.5)
    assert (scores["正面"].support, scores["负面"].support) == (3, 2)
    assert metrics.macro_f1(GOLD, PRED, L) == pytest.approx((2 / 3 + 0.5) / 2)


def test_confusion_rows_are_truth():
    assert metrics.confusion(GOLD, PRED, L) == [[2, 1], [1, 1]]


def test_class_never_predicted_has_zero_scores():
    scores = metrics.per_class(["正面", "负面"], ["正面", "正面"], L)
    assert scores["负面"] == metrics.ClassScores(0.0, 0.0, 0.0, 1)


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 10, 50, 90, 100):
        assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_ece_perfectly_calibrated_and_overconfident():
    assert metrics.expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert metrics.expected_calibration_error([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    # two bins: 0.55 conf, 1/2 right (gap .05); 0.95 conf, 2/2 right (gap .05)
    ece = metrics.expected_calibration_error([0.55, 0.55, 0.95, 0.95], [True, False, True, True])
    assert ece == pytest.approx(0.05)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.accuracy(["正面"], [])
