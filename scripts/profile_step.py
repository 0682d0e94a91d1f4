#!/usr/bin/env python3
"""Where one scheduler step goes, at 4 replies at once, beside llama.cpp's step for the same batch.

    python scripts/profile_step.py                 # greedy, then the chat role's sampling
    python scripts/profile_step.py --streams 2

Each reply: a 128-token prompt, then 64 tokens (EOS ignored), as `allinone bench` runs them
(app/measure/batched.py). Only steps with every reply going are counted. A step's time is split
into the llama_decode call (with its hand-over to the decoding thread), the llama.cpp sampler
chain, the guards (banned tokens set to -inf) and the rest (Python bookkeeping: pieces, stop
strings, queues, the lock). llama.cpp's step is llama-batched-bench's, from its generation
speed (S_TG) at the same stream count, if scripts/build_llama_bench.py built it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.llm import Sampling, generation, native, scheduler  # noqa: E402
from app.measure import batched  # noqa: E402
from app.roles.assistant import Assistant  # noqa: E402

PARTS = ("llama_decode", "sampler chain", "guards")


class StepClock:
    """Wraps the scheduler's step and the calls inside it; sums each part per step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._current: dict[str, float] | None = None
        self._wrap(scheduler.Scheduler, "_step", self._step)
        self._wrap(native.Context, "decode", self._part("llama_decode"))
        self._wrap(native.Context, "sample", self._part("sampler chain"))
        self._wrap(generation.Generation, "apply_bans", self._part("guards"))

    @staticmethod
    def _wrap(owner: type, name: str, make) -> None:
        setattr(owner, name, make(getattr(owner, name)))

    def _step(self, original):
        def step(self_):
            parts: dict[str, float] = defaultdict(float)
            parts["replies"] = len(self_._active)
            self._current = parts
            started = time.perf_counter()
            original(self_)
            parts["step"] = time.perf_counter() - started
            self._current = None
            self.steps.append(parts)

        return step

    def _part(self, name: str):
        def make(original):
            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    if self._current is not None:
                        self._current[name] += time.perf_counter() - started

            return timed

        return make


def profile(assistant: Assistant, clock: StepClock, streams: int, sampling: Sampling) -> dict:
    """Median ms per step of each part, over the steps where all `streams` replies decode."""
    clock.steps.clear()
    batched.ours(assistant.engine, streams, sampling, seed=3)
    full = [step for step in clock.steps if step["replies"] == streams]
    medians = {part: statistics.median(s[part] for s in full) * 1000 for part in PARTS}
    medians["step"] = statistics.median(s["step"] for s in full) * 1000
    medians["rest (bookkeeping)"] = medians["step"] - sum(medians[part] for part in PARTS)
    medians["steps"] = len(full)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=4, help="replies at once (4)")
    parser.add_argument("--model", default=None, help="GGUF (default: the configured model)")
    args = parser.parse_args()
    clock = StepClock()
    assistant = Assistant.load(args.model, parallel=max(args.streams, 2), seed=1)
    greedy = Sampling(temperature=0.0, repeat_penalty=1.0)
    batched.ours(assistant.engine, args.streams, greedy, seed=0)  # the slots' context, made now
    rows = {
        "greedy": profile(assistant, clock, args.streams, greedy),
        "chat sampling + guards": profile(
            assistant, clock, args.streams, batched.chat_sampling(assistant)
        ),
    }
    reference = llama_step_ms(assistant, args.streams)
    print(f"One step of {args.streams} replies, median ms over the steps with all going:\n")
    print("| part | " + " | ".join(rows) + " |")
    print("| --- | " + " | ".join("---:" for _ in rows) + " |")
    for part in (*PARTS, "rest (bookkeeping)", "step"):
        cells = " | ".join(f"{row[part]:.2f}" for row in rows.values())
        print(f"| {part} | {cells} |")
    print(f"| {batched.TOOL}: its step for the same batch | {reference} |")


def llama_step_ms(assistant: Assistant, streams: int) -> str:
    engine = assistant.engine
    tool = batched.tool_path(assistant.settings.cache_dir)
    if not tool.exists():
        return f"not built ({batched.TOOL}: run scripts/build_llama_bench.py)"
    speeds = batched.reference(
        tool,
        engine.model_path,
        threads=engine.n_threads,
        n_ctx=engine.parallel * engine.slot_cells,
        n_batch=engine.scheduler.n_batch,
        streams=(streams,),
    )
    return f"{streams / speeds[streams] * 1000:.2f}"


if __name__ == "__main__":
    main()
