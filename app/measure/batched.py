"""Replies decoded together, set beside llama.cpp's own batched decode (llama-batched-bench).

Why: "4 streams are only 1.5x one on 2 cores" was once taken for the machine's limit, and it
was not: llama.cpp's own tool, on the same weights and cores, got 2.4-2.6x. So the bench keeps
that tool beside our scheduler, in the same run, as the physical reference for many replies.

Both sides get the same:
- GGUF, threads and flash attention (off: what `Llama` sets, and the slots' context inherits);
- KV layout: one stream per slot, not unified, `slots x slot cells` cells in all (serve's
  default: 4 x 2048), and the slots' micro-batch (`-b`/`-ub`);
- work: N prompts of PROMPT_TOKENS random tokens, then GENERATED tokens each, EOS ignored.

The tool's figure is its generation speed (S_TG): N tokens per llama_decode, nothing sampled.
Ours goes through `Engine.stream` and the scheduler, with a reply's whole per-token work:
greedy, then again with the chat role's sampling and guards (its temperature, top-k/top-p,
penalties, banned words and no-copy runs; not its sentence limit or stop strings, which would
end replies early). Our figure is tokens/s while all N replies decode: from the last one's
first piece to the first one's end, counted by the engine's tally. The three alternate for
ROUNDS rounds (the tool first, then last), and each reports its median: the machine drifts.

The tool is built on demand by scripts/build_llama_bench.py into the cache folder; where it is
missing, the results say so and why.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from app.llm import Prompt, Sampling
from app.roles.replying import guards, reply_settings

TOOL = "llama-batched-bench"
PROMPT_TOKENS = 128
GENERATED = 64
STREAMS = (1, 2, 4)
ROUNDS = 5
# A chat message for the guards: its words are never copied, its grave words are "said".
GUARDED_MESSAGE = "今天又被老板骂了，心里很难受。"


def tool_folder(cache_dir: Path) -> Path:
    """Where the tool of the installed llama-cpp-python's llama.cpp is built."""
    return Path(cache_dir) / f"llama.cpp-{version('llama-cpp-python')}"


def tool_path(cache_dir: Path) -> Path:
    return tool_folder(cache_dir) / "build" / "bin" / TOOL


def reference(
    tool: Path, model: Path, *, threads: int, n_ctx: int, n_batch: int, streams: Sequence[int]
) -> dict[int, float]:
    """llama-batched-bench's generation tokens/s per stream count, one run of the tool."""
    command = [
        str(tool),
        *("-m", str(model), "-c", str(n_ctx), "-b", str(n_batch), "-ub", str(n_batch)),
        *("-npp", str(PROMPT_TOKENS), "-ntg", str(GENERATED)),
        *("-npl", ",".join(map(str, streams)), "-t", str(threads)),
        *("-nr", "-fa", "off", "--output-format", "jsonl"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    speeds = {}
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        if line.startswith("{") and "speed_tg" in line:
            row = json.loads(line)
            speeds[int(row["pl"])] = float(row["speed_tg"])
    if done.returncode != 0 or set(speeds) != set(streams):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{TOOL} exited with {done.returncode}: {' / '.join(tail)}")
    return speeds


def ours(engine: Any, streams: int, sampling: Sampling, seed: int) -> float:
    """Generation tokens/s of `streams` replies decoded together by the engine's scheduler."""
    rng = np.random.default_rng(seed)
    sampling = replace(sampling, max_tokens=GENERATED, ignore_eos=True)
    prompts = [
        Prompt([int(t) for t in rng.integers(1000, 20000, PROMPT_TOKENS)]) for _ in range(streams)
    ]
    firsts: list[float] = []
    ends: list[float] = []
    window: dict[str, float] = {}
    lock = threading.Lock()

    def consume(prompt: Prompt) -> None:
        started = False
        for _piece in engine.stream(prompt, sampling):
            if not started:
                started = True
                with lock:
                    firsts.append(time.perf_counter())
                    if len(firsts) == streams:  # all decode from here on
                        window["start"], window["tally"] = firsts[-1], engine.tally.tokens
        with lock:
            ends.append(time.perf_counter())
            if len(ends) == 1:
                window["end"], window["tally_end"] = ends[0], engine.tally.tokens

    threads = [threading.Thread(target=consume, args=(prompt,)) for prompt in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if "start" not in window or window["end"] <= window["start"]:
        raise RuntimeError("the replies never all decoded at once: no window to time")
    return (window["tally_end"] - window["tally"]) / (window["end"] - window["start"])


def chat_sampling(assistant: Any) -> Sampling:
    """The chat role's default sampling with its guards, as a reply of unknown tone gets them."""
    role = assistant.roles.get(assistant.roles.defaults.chat)
    settings, no_copy, _drafts = reply_settings(role, {}, seed=1)
    banned = guards(
        assistant.engine, role, None, 1.0, [GUARDED_MESSAGE], [GUARDED_MESSAGE], no_copy
    )
    return replace(settings, banned=banned, no_repeat=no_copy, stop=(), max_sentences=0)


def run(
    assistant: Any,
    cache_dir: Path,
    *,
    streams: Sequence[int] = STREAMS,
    rounds: int = ROUNDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """{"tool", "missing", "flash_attn", "reference"/"greedy"/"chat": {streams: [tokens/s]}};
    "reference" is absent, and "missing" says why, where the tool cannot run."""
    engine = assistant.engine
    slots = getattr(engine, "parallel", 1)
    streams = [n for n in streams if n <= slots]
    tool = tool_path(cache_dir)
    results: dict[str, Any] = {"tool": str(tool), "flash_attn": "off", "slots": slots}
    if not tool.exists():
        results["missing"] = (
            f"{TOOL} is not built: run `python scripts/build_llama_bench.py` (about 4 minutes)"
        )
    samplings = {"greedy": Sampling(temperature=0.0, repeat_penalty=1.0)}
    samplings["chat"] = chat_sampling(assistant)
    ours(engine, max(streams), samplings["greedy"], seed=0)  # the slots' context, made now
    cells = slots * engine.slot_cells
    for round_ in range(rounds):
        # The tool goes first in even rounds and last in odd ones, so a machine that drifts
        # (10% within a minute here) favours neither side.
        if round_ % 2 == 0:
            _reference_round(results, tool, engine, cells, streams)
        for name, sampling in samplings.items():
            for n in streams:
                speed = ours(engine, n, sampling, seed=round_ * 10 + n)
                results.setdefault(name, {}).setdefault(n, []).append(speed)
        if round_ % 2 == 1:
            _reference_round(results, tool, engine, cells, streams)
        if progress:
            progress(f"batched round {round_ + 1}")
    return results


def _reference_round(
    results: dict[str, Any], tool: Path, engine: Any, cells: int, streams: Sequence[int]
) -> None:
    """One run of the tool into results["reference"]; where it fails, results["missing"]."""
    if "missing" in results:
        return
    try:
        speeds = reference(
            tool,
            engine.model_path,
            threads=engine.n_threads,
            n_ctx=cells,
            n_batch=engine.scheduler.n_batch,
            streams=streams,
        )
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        results["missing"] = str(error)
    else:
        for n, speed in speeds.items():
            results.setdefault("reference", {}).setdefault(n, []).append(speed)


def medians(results: dict[str, Any], name: str) -> dict[int, float]:
    """Stream count -> median tokens/s of one side (`reference`, `greedy` or `chat`)."""
    return {int(n): statistics.median(speeds) for n, speeds in results.get(name, {}).items()}
