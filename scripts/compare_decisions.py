#!/usr/bin/env python3
"""Which way of turning the model's answer into a label pays? One table on dev.

    python scripts/compare_decisions.py [--rows 2000] [--role sentiment]

Compares, on the same dev run: the label logits alone (argmax, = greedy grammar decoding), a
decision threshold on P(正面) from those logits calibrated on the TRAINING rows, and the
learned head on middle-layer states fit on 500 / 1,000 / all training rows. Dev is only
measured, never fitted. Training features come from the same resumable chunks that
`allinone train-head` writes under the cache folder (the same rows and seed reuse them).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.jobs.training import TRAIN_ROWS, balanced_sample, extract, read_labelled_rows  # noqa: E402
from app.measure.evaluation import DEFAULT_DEV, load_labelled  # noqa: E402
from app.roles.assistant import Assistant  # noqa: E402
from app.roles.head import default_layers, fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000, help="training rows (default: 2000)")
    parser.add_argument("--seed", type=int, default=13, help="row sampling seed (default: 13)")
    parser.add_argument(
        "--dev", type=Path, default=DEFAULT_DEV, help="labelled dev file (default: %(default)s)"
    )
    parser.add_argument("--role", default="sentiment")
    args = parser.parse_args()

    assistant = Assistant.load(heads=False)
    role = assistant.roles.get(args.role)
    layers = default_layers(assistant.engine.n_layer)
    texts, labels = read_labelled_rows(TRAIN_ROWS)
    picked = balanced_sample(texts, labels, role.labels, args.rows, args.seed)
    work = assistant.settings.cache_dir / "compare-decisions"
    key = f"{role.name}-{role.fingerprint()}-{args.rows}-{args.seed}"
    x_train, p_train = extract(
        assistant, role, [t for t, _ in picked], layers, work / key, with_logits=True
    )
    y_train = np.asarray([1 if label == role.labels[0] else 0 for _, label in picked])
    examples = load_labelled(args.dev)
    dev_texts = [example.text for example in examples]
    dev_key = hashlib.sha256("\n".join(dev_texts).encode("utf-8")).hexdigest()[:12]
    x_dev, p_dev = extract(
        assistant, role, dev_texts, layers, work / f"dev-{key}-{dev_key}", with_logits=True
    )
    y_dev = np.asarray([1 if e.label == role.labels[0] else 0 for e in examples])

    candidates = np.unique(p_train)
    train_acc = [((p_train > t) == y_train).mean() for t in candidates]
    threshold = float(candidates[int(np.argmax(train_acc))])

    rows = [
        ("label logits, argmax (grammar decision)", ((p_dev > 0.5) == y_dev).mean()),
        (
            f"threshold P(正面) > {threshold:.2f}, calibrated on train",
            ((p_dev > threshold) == y_dev).mean(),
        ),
    ]
    for n in sorted({min(size, len(y_train)) for size in (500, 1000, len(y_train))}):
        head = fit(x_train[:n], y_train[:n], role.labels, layers, "", "", report=lambda _: None)
        predicted = np.asarray([head.probability(row) > 0.5 for row in x_dev])
        rows.append(
            (
                f"learned head, layers {layers[0]}-{layers[-1]}, {n} training rows "
                f"({head.note.split(',')[1].strip()})",
                (predicted == y_dev).mean(),
            )
        )
    print(f"| decision on {args.dev.name} ({len(y_dev)} rows) | accuracy |\n| --- | ---: |")
    for name, accuracy in rows:
        print(f"| {name} | {accuracy:.1%} |")


if __name__ == "__main__":
    main()
