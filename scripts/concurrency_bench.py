#!/usr/bin/env python3
"""Several chats at once: aggregate speed, one chat alone, a label during them, identity.

    python scripts/concurrency_bench.py --served             # a real server, the openai client
    python scripts/concurrency_bench.py                      # in-process: --parallel 1 and 4
    python scripts/concurrency_bench.py --parallel 4 --identical 50

--served starts `allinone serve` (its defaults: --parallel 4) and talks to it as a client does:
streamed chat completions through the official `openai` client, POST /v1/sentiment beside them.

Each --parallel value is measured in a fresh process of its own (a model loaded and closed
earlier in the same process could change the figures); app/measure/concurrency.py says what is
measured. Prints a Markdown table; --identical N adds how many of N greedy replies are the same
alone and decoded beside others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.measure import concurrency  # noqa: E402


def measure(args: argparse.Namespace, parallel: int) -> dict:
    """Measure one --parallel value in this process."""
    from app.roles.assistant import Assistant

    assistant = Assistant.load(args.model, parallel=parallel, seed=1)
    result = {
        "alone": concurrency.alone(assistant, args.tokens),
        "together": concurrency.together(assistant, args.streams, args.tokens),
    }
    if args.identical and parallel > 1:
        result["identical"] = concurrency.identical(assistant, args.identical, args.streams)
    assistant.engine.close()
    return result


def ceiling(args: argparse.Namespace) -> str:
    """llama-batched-bench's own generation speed at 1 and `streams` streams in this sitting
    (serve's slot layout), if scripts/build_llama_bench.py built it: what batching can give
    here, before any mood step or prompt."""
    from app.config import load_settings
    from app.llm.scheduler import SLOT_BATCH, SLOT_CELLS
    from app.measure import batched
    from app.models import resolve_model_path

    settings = load_settings(**({"model": args.model} if args.model else {}))
    tool = batched.tool_path(settings.cache_dir)
    if not tool.exists():
        return f"(no physical reference: {batched.TOOL} not built, see build_llama_bench.py)\n"
    cells = settings.parallel * SLOT_CELLS  # serve's context (8192) holds a full slot each
    speeds = batched.reference(
        tool,
        resolve_model_path(settings),
        threads=settings.n_threads,
        n_ctx=cells,
        n_batch=SLOT_BATCH,
        streams=(1, args.streams),
    )
    one, many = speeds[1], speeds[args.streams]
    return (
        f"{batched.TOOL}, same sitting: 1 stream {one:.1f} tokens/s, {args.streams} streams "
        f"{many:.1f} tokens/s ({many / one:.2f}x): the most batching gives here\n\n"
    )


def print_served(args: argparse.Namespace) -> None:
    """Start a server, measure through it, print one Markdown table."""
    import tempfile

    from app.measure import serving

    settings = {"model": args.model, "seed": 1}
    with tempfile.TemporaryDirectory() as folder, serving.Server(settings, Path(folder)) as server:
        result = concurrency.served(server.base, args.streams, args.served_tokens)
    print(json.dumps(result), file=sys.stderr)
    steady = result["sentiment_steady_ms"]
    print(ceiling(args), end="")
    print(
        "| one chat alone, tokens/s | "
        f"{result['streams']} at once, tokens/s (x alone) | first piece, median ms | "
        f"sentiment {concurrency.LABEL_AFTER_S:.0f} s after they start, ms | "
        "sentiment while they stream, max ms |\n| ---: | ---: | ---: | ---: | ---: |\n"
        f"| {result['alone_tokens_per_s']:.1f} | {result['together_tokens_per_s']:.1f} "
        f"({result['ratio']:.2f}x) | {result['first_piece_ms']:.0f} | "
        f"{result['sentiment_after_start_ms']:.0f} | {max(steady, default=float('nan')):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4], help="default: 1 4")
    parser.add_argument("--streams", type=int, default=4, help="chats started at once (4)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply (64)")
    parser.add_argument(
        "--served-tokens",
        type=int,
        default=concurrency.SERVED_TOKENS,
        help=f"max_tokens per reply with --served ({concurrency.SERVED_TOKENS})",
    )
    parser.add_argument("--identical", type=int, default=0, help="greedy replies to compare (0)")
    parser.add_argument("--model", default=None, help="GGUF (default: the configured model)")
    parser.add_argument(
        "--served", action="store_true", help="through a real `allinone serve` (off)"
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one value
    args = parser.parse_args()
    if args.served:
        print_served(args)
        return
    if args.json:
        print(json.dumps(measure(args, args.parallel[0])))
        return
    rows = []
    for parallel in args.parallel:
        command = [sys.executable, __file__, "--json", "--parallel", str(parallel)]
        command += ["--streams", str(args.streams), "--tokens", str(args.tokens)]
        command += ["--identical", str(args.identical)]
        if args.model:
            command += ["--model", args.model]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"--parallel {parallel} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((f"--parallel {parallel}", result["alone"], result["together"]))
        print(f"--parallel {parallel}: {result}", file=sys.stderr)
        if "identical" in result:
            same = result["identical"]
            counts = f"{same['identical']} of {same['replies']}"
            print(f"--parallel {parallel}: {counts} greedy replies identical alone and batched")
    print(concurrency.table(rows))


if __name__ == "__main__":
    main()
