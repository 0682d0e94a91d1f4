#!/usr/bin/env python3
"""Developers: retrain a SHIPPED head (heads/ROLE.json) with `allinone train-head`.

    python scripts/train_head.py --role sentiment --rows 14800   # shipped: reviews, ~1 hour
    python scripts/train_head.py --role mood --rows 2000         # shipped: chat moods, ~8 min

The same command as `allinone train-head` (every flag is its flag; --help lists them), except
that the head goes to heads/ROLE.json beside prompts.yaml, where the role's `head:` field points,
instead of the per-user data folder. Users train heads for their own model with
`allinone train-head`, no checkout needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args and not {"-h", "--help"} & set(args):
        role = argparse.ArgumentParser(add_help=False)
        role.add_argument("--role", default="sentiment")
        name = role.parse_known_args(args)[0].role
        args += ["--out", str(ROOT / "heads" / f"{name}.json")]
    main(["train-head", *args], prog_name="python scripts/train_head.py")
