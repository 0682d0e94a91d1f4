#!/usr/bin/env python3
"""Which way of turning the answer-position logits into a label pays? One table on dev.

    python scripts/train_head.py --features reports/train_features.npz   # once
    python scripts/compare_decisions.py --features reports/train_features.npz

Compares, on the same dev features: the label logits alone (argmax, = greedy grammar
decoding), a decision threshold on the 正面-负面 logit margin calibrated on the TRAINING rows,
and the learned head (fit on the training rows). Dev is only measured, never fitted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app.dispatcher import Assistant  # noqa: E402
from app.evaluation import load_labelled  # noqa: E402
from app.head import fit  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "reviews_dev.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--features", type=Path, required=True, help="training features from train_head.py"
    )
    parser.add_argument(
        "--dev", type=Path, default=DEV, help="labelled dev file (default: %(default)s)"
    )
    parser.add_argument("--role", default="sentiment")
    args = parser.parse_args()

    train = np.load(args.features)
    x_train, y_train, ids = train["x"].astype(np.float64), train["y"], train["ids"]
    assistant = Assistant.load()
    role = assistant.roles.get(args.role)
    examples = load_labelled(args.dev)
    x_dev = np.empty((len(examples), len(ids)))
    for i, example in enumerate(tqdm(examples, desc="dev features", unit="row")):
        _, x_dev[i] = assistant.engine.choose(
            assistant.prompt_for(role, example.text), role.labels, capture=ids
        )
    y_dev = np.asarray([1 if e.label == role.labels[0] else 0 for e in examples])

    first, second = (
        int(np.where(ids == assistant.engine.tokenize(label)[0])[0][0]) for label in role.labels
    )
    margin_train = x_train[:, first] - x_train[:, second]
    margin_dev = x_dev[:, first] - x_dev[:, second]
    candidates = np.unique(margin_train)
    train_acc = [((margin_train > t) == y_train).mean() for t in candidates]
    threshold = float(candidates[int(np.argmax(train_acc))])

    rows = [
        ("label logits, argmax (grammar decision)", ((margin_dev > 0) == y_dev).mean()),
        (
            f"margin threshold {threshold:+.2f}, calibrated on train",
            ((margin_dev > threshold) == y_dev).mean(),
        ),
    ]
    for n in (500, 1000, len(y_train)):
        head = fit(x_train[:n], y_train[:n], ids, role.labels, "ablation", report=lambda _: None)
        predicted = np.asarray([head.probability(row) > 0.5 for row in x_dev])
        rows.append(
            (
                f"learned head, {n} training rows ({head.note.split(',')[1].strip()})",
                (predicted == y_dev).mean(),
            )
        )
    print(f"| decision on {args.dev.name} ({len(y_dev)} rows) | accuracy |\n| --- | ---: |")
    for name, accuracy in rows:
        print(f"| {name} | {accuracy:.1%} |")


if __name__ == "__main__":
    main()
