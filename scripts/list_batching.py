#!/usr/bin/env python3
"""Does the list path's batching keep every result, and what does it gain? One table.

    python scripts/list_batching.py --streams 7 --limit 300

Compares the one-text path (Engine.choose: each text decoded alone after the cached role
prefix) with the list path's layout (app/llm/streams.py: texts of close token lengths decoded in one
call, each in its own KV stream, padded to the longest). It prints how many texts got
bit-identical label logits on both paths, whether the decision ever differs, and the user-text
tokens/s of each against raw prompt processing (the bench's floor). `--streams` and `--slack`
try other settings than the app's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.llm.labels import PAD_SLACK, STREAM_CELLS, STREAMS  # noqa: E402
from app.measure.evaluation import DEFAULT_DEV, load_labelled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DEV, help="labelled file (default: %(default)s)"
    )
    parser.add_argument(
        "--streams", type=int, default=STREAMS, help="sequences per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--slack",
        type=int,
        default=PAD_SLACK,
        help="largest length difference, in tokens, within one call (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, default=300, help="texts (default: %(default)s)")
    args = parser.parse_args()
    if not 2 <= args.streams <= 64:
        sys.exit("--streams must lie within 2-64.")
    if args.slack < 0:
        sys.exit("--slack must be 0 or more.")

    from app.llm.streams import StreamBatch, plan
    from app.measure.bench import raw_floor
    from app.roles.assistant import Assistant

    assistant = Assistant.load(heads=False)
    engine, role = assistant.engine, assistant.roles.get("sentiment")
    streams = StreamBatch(engine.llm, engine.tap, streams=args.streams, cells=STREAM_CELLS)
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
        engine.kv.evaluate(prompt, exact=True)
        single.append(engine.kv.last_logits().copy())
    single_seconds = time.perf_counter() - started

    rests = [prompt.tokens[len(prefix) :] for prompt in prompts]
    groups = plan(
        [len(rest) for rest in rests],
        streams=args.streams,
        n_batch=engine.n_batch,
        slack=args.slack,
    )
    started = time.perf_counter()
    together: list[np.ndarray | None] = [None] * len(prompts)
    for group in groups:
        logits, _ = streams.decode(prefix, [rests[index] for index in group])
        for index, row in zip(group, logits, strict=True):
            together[index] = row
    batched_seconds = time.perf_counter() - started

    user_tokens = sum(len(engine.tokenize(example.text)) for example in examples)
    identical = sum(np.array_equal(a, b) for a, b in zip(single, together, strict=True))
    decoded = sum(len(rest) for rest in rests)
    padded = sum(len(group) * max(len(rests[index]) for index in group) for group in groups)
    print(
        f"{len(prompts)} texts, {len({len(rest) for rest in rests})} distinct lengths, "
        f"{len(groups)} calls ({padded / decoded - 1:.1%} of the tokens decoded are padding)"
    )
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
        ("padded sets", batched_seconds),
    ):
        rate = user_tokens / seconds
        print(
            f"{name:18} {rate:6.1f} user-text tokens/s = {rate / floor:.2f}x raw pp ({floor:.1f})"
        )


if __name__ == "__main__":
    main()
