#!/usr/bin/env python3
"""Does the list path's batching keep every result, and what does it gain? One table.

    python scripts/list_batching.py --streams 8 --limit 300

Compares the one-text path (Engine.choose: each text decoded alone after the cached role
prefix) with the list path's layout (app/streams.py: texts of EQUAL token length decoded in one
call, each in its own KV stream). It prints how many texts got bit-identical label logits on
both paths, whether the decision ever differs, and the user-text tokens/s of each against raw
prompt processing (the bench's floor). `--streams` tries other stream counts than the app's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.evaluation import DEFAULT_DEV, load_labelled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DEV, help="labelled file (default: %(default)s)"
    )
    parser.add_argument(
        "--streams", type=int, default=8, help="sequences per batch (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=300, help="texts (default: %(default)s)")
    args = parser.parse_args()
    if not 2 <= args.streams <= 64:
        sys.exit("--streams must lie within 2-64.")

    from app.bench import raw_floor
    from app.dispatcher import Assistant
    from app.engine import STREAM_CELLS
    from app.streams import StreamBatch

    assistant = Assistant.load(heads=False)
    engine, role = assistant.engine, assistant.roles.get("sentiment")
    streams = StreamBatch(engine.llm, engine._tap, streams=args.streams, cells=STREAM_CELLS)
    examples, prompts = [], []
    for example in load_labelled(args.data):
        prompt = assistant.prompt_for(role, example.text)
        if len(prompt.tokens) < STREAM_CELLS and len(examples) < args.limit:
            examples.append(example)
            prompts.append(prompt)
    prefix = prompts[0].tokens[: prompts[0].prefix_len]

    started = time.perf_counter()
    single = []
    for prompt in prompts:  # the one-text path, as Engine.choose decodes
        engine._evaluate(prompt, exact=True)
        single.append(engine._last_logits().copy())
    single_seconds = time.perf_counter() - started

    by_length: dict[int, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_length[len(prompt.tokens) - len(prefix)].append(index)
    started = time.perf_counter()
    together: list[np.ndarray | None] = [None] * len(prompts)
    calls = 0
    for length, indices in by_length.items():
        size = max(1, min(args.streams, engine.n_batch // length))
        for start in range(0, len(indices), size):
            group = indices[start : start + size]
            rests = [prompts[index].tokens[len(prefix) :] for index in group]
            logits, _ = streams.decode(prefix, rests)
            for index, row in zip(group, logits, strict=True):
                together[index] = row
            calls += 1
    batched_seconds = time.perf_counter() - started

    user_tokens = sum(len(engine.tokenize(example.text)) for example in examples)
    identical = sum(np.array_equal(a, b) for a, b in zip(single, together, strict=True))
    print(f"{len(prompts)} texts, {len(by_length)} distinct lengths, {calls} batched calls")
    firsts = [engine.tokenize(label)[0] for label in role.labels]
    same = sum(
        int(np.argmax(a[firsts])) == int(np.argmax(b[firsts]))
        for a, b in zip(single, together, strict=True)
    )
    largest = max(float(np.abs(a - b).max()) for a, b in zip(single, together, strict=True))
    print(
        f"bit-identical label logits: {identical}/{len(prompts)} (largest difference {largest:.1e})"
    )
    print(f"same label-logits decision: {same}/{len(prompts)}")
    floor = raw_floor(assistant, [example.text for example in examples])["pp_tokens_per_s"]
    for name, seconds in (
        ("one text a call", single_seconds),
        ("equal-length sets", batched_seconds),
    ):
        rate = user_tokens / seconds
        print(
            f"{name:18} {rate:6.1f} user-text tokens/s = {rate / floor:.2f}x raw pp ({floor:.1f})"
        )


if __name__ == "__main__":
    main()
