#!/usr/bin/env python3
"""Write the chat role's example bank vectors for a model into banks/vectors/, to ship.

    python scripts/ship_bank_vectors.py [--model NAME_OR_PATH]

Why: a new user's first chat would otherwise read the bank's 182 exchanges with the model
(~16 s on 2 cores) before its first reply. The file is named by the bank's cache key (bank file,
model, the steering role's prompt and head layers), so it is used only when all of these are as
they were here (app/roles/bank_cache.py). Run it again after changing banks/chat.yaml, the mood
role's prompt or head: tests/test_bank_cache.py fails while the shipped file is stale. Older files
of the same model and bank are removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.atomic import atomic_open  # noqa: E402
from app.roles.assistant import Assistant  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path or catalog name (default: as the CLI finds it)")
    args = parser.parse_args()
    assistant = Assistant.load(model=args.model, parallel=1)
    role = assistant.roles.chat
    bank = assistant.roles.banks[role.name]
    steering = assistant.labeller.label_role(assistant.roles.steering(role).name)
    layers = assistant.bank_cache.layers(steering)
    _, shipped = assistant.bank_cache.vector_files(role, bank, steering, layers)
    texts = [exchange.input for exchange in bank.exchanges]
    vectors = assistant.bank_cache.vectors(texts, steering, layers).astype(np.float32)
    shipped.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(shipped, "wb") as out:
        np.save(out, vectors)
    model_part = shipped.name.rsplit("-", 1)[0]
    for old in shipped.parent.glob(f"{model_part}-*.npy"):
        if old != shipped:
            old.unlink()
            print(f"removed {old.relative_to(ROOT)}")
    print(f"wrote {shipped.relative_to(ROOT)}: {vectors.shape[0]} vectors of {vectors.shape[1]}")


if __name__ == "__main__":
    main()
