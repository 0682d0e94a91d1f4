#!/usr/bin/env python3
"""Fit the reply judge's head (heads/reply-judge.json) on blind ratings of chat replies.

    python scripts/train_reply_judge.py                     # docs/ratings/judge/ratings.jsonl

Each rated reply (a message, a reply, its mean 1-5 rating over the rubric of
docs/ratings/README.md) goes through the `reply-judge` role's prompt as the drafts do at run time
(app/roles/drafts.py); the pooled states of the head's layers are the features. A ridge regression
predicts the rating; the head stores it with the bias shifted by 3, so P(好) > 0.5 means a
predicted rating above 3 (the middle of the rubric) and P(好) ranks drafts as the rating would.
The ridge strength is chosen by leave-one-message-out cross-validation on what the head is for:
the mean rating of the reply it would pick among each message's rated replies. Only replies to
tuning messages are rated for training; the rating set (tests/data/rating_messages.jsonl) never
is (tests/test_bank.py checks the two are disjoint).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATINGS = ROOT / "docs" / "ratings" / "judge" / "ratings.jsonl"
ALPHAS = (30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
MIDDLE = 3.0  # the rubric's "3": P(好) = 0.5 there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ratings", type=Path, default=RATINGS, help=f"Rated replies. [default: {RATINGS}]"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "heads" / "reply-judge.json",
        help="Where the head goes. [default: heads/reply-judge.json]",
    )
    parser.add_argument(
        "--role", default="reply-judge", help="The judge role. [default: reply-judge]"
    )
    args = parser.parse_args()

    from tqdm import tqdm

    from app.roles.assistant import Assistant
    from app.roles.drafts import DRAFT_FOR_JUDGE
    from app.roles.head import Head, default_layers, features

    rated: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in args.ratings.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rated[(row["message"], row["reply"])].append(float(row["rating"]))
    pairs = list(rated)
    ratings = np.array([statistics.mean(rated[pair]) for pair in pairs])

    assistant = Assistant.load()
    judge = assistant.roles.get(args.role)
    layers = default_layers(assistant.engine.n_layer)
    rows = []
    for message, reply in tqdm(pairs, unit="reply", file=sys.stderr):
        text = DRAFT_FOR_JUDGE.format(message=message, reply=reply)
        _, states = assistant.labeller.judge(text, judge, use_head=False, layers=layers)
        rows.append(features(states))
    x = np.stack(rows)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    messages = [message for message, _ in pairs]

    picked = {alpha: _held_out_pick(z, ratings, messages, alpha) for alpha in ALPHAS}
    for alpha, (pick, corr) in picked.items():
        print(f"alpha {alpha:g}: held-out pick {pick:.3f}, correlation {corr:.3f}")
    best = max(ALPHAS, key=lambda alpha: picked[alpha][0])
    weights, intercept = _ridge(z, ratings, best)
    pick, corr = picked[best]
    pools = _pools(messages)
    first = statistics.mean(ratings[indices[0]] for indices in pools.values())
    oracle = statistics.mean(max(ratings[i] for i in indices) for indices in pools.values())
    note = (
        f"ridge regression on {len(pairs)} blind-rated replies to {len(set(messages))} tuning "
        f"messages, alpha {best:g}; held out by message: picks average {pick:.2f} "
        f"(first reply {first:.2f}, best possible {oracle:.2f}), correlation {corr:.2f}"
    )
    head = Head(
        labels=judge.labels,  # type: ignore[arg-type]
        layers=tuple(layers),
        model=assistant.engine.model_name,
        mean=mean,
        scale=scale,
        weights=weights,
        bias=intercept - MIDDLE,
        fingerprint=judge.fingerprint(),
        note=note,
    )
    args.out.write_text(head.to_json() + "\n", encoding="utf-8")
    print(note)
    print(f"Wrote {args.out}")


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept of a ridge regression on standardised features (in its dual form:
    fewer rated replies than features)."""
    centre = y.mean()
    weights = z.T @ np.linalg.solve(z @ z.T + alpha * np.eye(len(z)), y - centre)
    return weights, float(centre)


def _pools(messages: list[str]) -> dict[str, list[int]]:
    """Indices of each message's rated replies, for messages with at least two."""
    pools: dict[str, list[int]] = defaultdict(list)
    for index, message in enumerate(messages):
        pools[message].append(index)
    return {message: indices for message, indices in pools.items() if len(indices) > 1}


def _held_out_pick(
    z: np.ndarray, y: np.ndarray, messages: list[str], alpha: float
) -> tuple[float, float]:
    """Leave one message out: the mean rating of the reply the head picks for it, and the
    correlation of held-out predictions with the ratings."""
    predicted = np.zeros(len(y))
    for message in set(messages):
        held = np.array([m == message for m in messages])
        weights, intercept = _ridge(z[~held], y[~held], alpha)
        predicted[held] = z[held] @ weights + intercept
    pools = _pools(messages)
    picks = [y[max(indices, key=predicted.__getitem__)] for indices in pools.values()]
    return float(statistics.mean(picks)), float(np.corrcoef(predicted, y)[0, 1])


if __name__ == "__main__":
    main()
