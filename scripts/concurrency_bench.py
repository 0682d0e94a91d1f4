#!/usr/bin/env python3
"""Several chats at once: aggregate speed, one chat alone, a label during them, identity.

    python scripts/concurrency_bench.py                      # --parallel 1 and 4, one table
    python scripts/concurrency_bench.py --parallel 4 --identical 50

Each --parallel value loads the model afresh in this process (app/measure/concurrency.py says
what is measured). Prints a Markdown table; --identical N adds how many of N greedy replies are
the same alone and decoded beside others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.dispatcher import Assistant  # noqa: E402
from app.measure import concurrency  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--streams", type=int, default=4, help="chats started at once")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply")
    parser.add_argument("--identical", type=int, default=0, help="greedy replies to compare")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    rows = []
    for parallel in args.parallel:
        assistant = Assistant.load(args.model, parallel=parallel, seed=1)
        solo = concurrency.alone(assistant, args.tokens)
        many = concurrency.together(assistant, args.streams, args.tokens)
        rows.append((f"--parallel {parallel}", solo, many))
        print(f"--parallel {parallel}: alone {solo}, together {many}", file=sys.stderr)
        if args.identical and parallel > 1:
            same = concurrency.identical(assistant, args.identical, args.streams)
            print(f"--parallel {parallel}: {same['identical']} of {same['replies']} greedy replies")
            print("identical alone and batched")
        assistant.engine.close()
    print(concurrency.table(rows))


if __name__ == "__main__":
    main()
