#!/usr/bin/env python3
"""Build llama.cpp's own `llama-batched-bench` once, for `allinone bench` to measure against.

    python scripts/build_llama_bench.py            # about 4 minutes on 2 cores
    python scripts/build_llama_bench.py --force    # build again

Opt-in and never part of the install or of the tests: it fetches the source distribution of the
installed llama-cpp-python from PyPI, takes the llama.cpp it vendors (the very code our model
runs on), and builds that one tool into the cache folder (`--cache-dir`, else ALLINONE_CACHE_DIR,
else the default cache). Needs cmake and a C++ compiler (Debian: apt install cmake g++).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from app.config import load_settings  # noqa: E402
from app.measure.batched import TOOL, tool_folder, tool_path  # noqa: E402

PERCENT = re.compile(r"^\[\s*(\d+)%\]")
CONFIGURE = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TOOLS=ON"]
CONFIGURE += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def fetch_source(package_version: str, into: Path) -> Path:
    """The vendored llama.cpp of llama-cpp-python `package_version`, unpacked into `into`."""
    with tempfile.TemporaryDirectory() as download:
        print(f"Fetching llama-cpp-python {package_version}'s source from PyPI...", file=sys.stderr)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += ["--quiet", "-d", download, f"llama-cpp-python=={package_version}"]
        if subprocess.run(command, check=False).returncode != 0:
            fail("pip could not download the source distribution: is PyPI reachable?")
        archive = next(Path(download).glob("*.tar.gz"), None)
        if archive is None:
            fail("pip downloaded no .tar.gz source distribution")
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if parts[1:3] == ("vendor", "llama.cpp") and len(parts) > 3:
                    member.name = str(Path(*parts[3:]))
                    members.append(member)
            if not members:
                fail(f"{archive.name} holds no vendor/llama.cpp")
            shutil.rmtree(into, ignore_errors=True)
            tar.extractall(into, members=members, filter="data")
    return into


def run_logged(command: list[str], log: Path, bar: tqdm | None = None) -> None:
    """Run a build step, its output in `log`; a `[ NN%]` line moves the bar."""
    with log.open("a", encoding="utf-8") as out:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            match = PERCENT.match(line)
            if bar is not None and match:
                bar.update(int(match.group(1)) - bar.n)
        if process.wait() != 0:
            fail(f"`{' '.join(command[:3])} ...` failed; its output is in {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache-dir", type=Path, help="where to build (default: the app's cache folder)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="compile jobs (default: all cores)"
    )
    parser.add_argument("--force", action="store_true", help="build again even if it is there")
    args = parser.parse_args()
    cache_dir = args.cache_dir or load_settings().cache_dir
    tool = tool_path(cache_dir)
    if tool.exists() and not args.force:
        print(tool)
        return
    missing = [name for name in ("cmake", "c++") if shutil.which(name) is None]
    if missing:
        fail(f"{' and '.join(missing)} not found: install them (Debian: apt install cmake g++)")
    folder = tool_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    source = fetch_source(version("llama-cpp-python"), folder / "src")
    build = folder / "build"
    log = folder / "build.log"
    log.write_text("", encoding="utf-8")
    print(f"Configuring llama.cpp (log: {log})...", file=sys.stderr)
    run_logged(["cmake", "-S", str(source), "-B", str(build), *CONFIGURE], log)
    with tqdm(total=100, unit="%", desc=f"building {TOOL}", file=sys.stderr) as bar:
        command = ["cmake", "--build", str(build), "--target", TOOL, "-j", str(args.jobs)]
        run_logged(command, log, bar)
        bar.update(100 - bar.n)
    if not tool.exists():
        fail(f"the build ended but {tool} is not there; see {log}")
    print(tool)


if __name__ == "__main__":
    main()
