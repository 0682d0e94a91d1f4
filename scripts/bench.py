#!/usr/bin/env python3
"""Speed and memory benchmark, the same as `allinone bench` (see `--help` for every flag).

python scripts/bench.py                 # whole reviews_dev.csv, default settings
python scripts/bench.py --limit 50      # quicker
python scripts/bench.py --ctx 512 --batch 64 --out reports/bench-low-memory
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli.measuring import bench  # noqa: E402

if __name__ == "__main__":
    bench(prog_name="bench.py")
