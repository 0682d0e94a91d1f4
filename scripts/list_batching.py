#!/usr/bin/env python3
"""Would batching a list's texts as parallel sequences pay? The measurement behind "no".

    python scripts/list_batching.py --streams 8 --limit 300

The shipped list path decodes one text per llama.cpp call after the cached role prefix. This
script loads the model with one KV stream per sequence (`kv_unified=false`), so each batched text
sits in its own cells exactly where it sits when decoded alone, and decodes texts of EQUAL token
length together (llama.cpp splits unequal lengths of separate streams into several steps, which
rounds differently). It prints how many texts got bit-identical label logits on both paths and
the user-text tokens/s of each against
raw prompt processing (the bench's floor). Measurement only: the app does not use this path.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "reviews_dev.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=DEV, help="labelled file (default: %(default)s)"
    )
    parser.add_argument(
        "--streams", type=int, default=8, help="sequences per batch (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=300, help="texts (default: %(default)s)")
    args = parser.parse_args()
    if not 2 <= args.streams <= 64:
        sys.exit("--streams must lie within 2-64.")

    defaults = llama_cpp.llama_cpp.llama_context_default_params

    def streamed() -> llama_cpp.llama_context_params:
        params = defaults()
        params.n_seq_max, params.kv_unified = args.streams, False
        return params

    llama_cpp.llama_cpp.llama_context_default_params = streamed
    os.environ["ALLINONE_N_CTX"] = str(1024 * args.streams)  # 1,024 cells a stream
    from app.bench import raw_floor
    from app.dispatcher import Assistant
    from app.evaluation import load_labelled

    assistant = Assistant.load(heads=False)
    engine, role = assistant.engine, assistant.roles.get("sentiment")
    examples = [e for e in load_labelled(args.data) if len(e.text) < 300][: args.limit]
    prompts = [assistant.prompt_for(role, example.text) for example in examples]
    prefix = prompts[0].prefix_len

    started = time.perf_counter()
    single = []
    for prompt in prompts:
        engine._evaluate(prompt, exact=True)
        single.append(engine._last_logits().copy())
    single_seconds = time.perf_counter() - started

    state = engine._prefix_states[tuple(prompts[0].tokens[:prefix])]
    saved = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    memory = llama_cpp.llama_get_memory(engine._ctx)

    def decode_together(indices: list[int]) -> list[np.ndarray]:
        """Each text in its own stream, after the prefix restored there; one llama_decode."""
        n, last = 0, []
        for seq, index in enumerate(indices):
            llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            llama_cpp.llama_state_seq_set_data(engine._ctx, saved, len(state), seq)
            rest = prompts[index].tokens[prefix:]
            for offset, token in enumerate(rest):
                batch.token[n], batch.pos[n] = token, prefix + offset
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq
                batch.logits[n] = offset == len(rest) - 1
                n += 1
            last.append(n - 1)
        batch.n_tokens = n
        if llama_cpp.llama_decode(engine._ctx, batch) != 0:
            sys.exit("llama_decode failed")
        return [
            np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(engine._ctx, i), (engine.n_vocab,))
            for i in last
        ]

    by_length: dict[int, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_length[len(prompt.tokens) - prefix].append(index)
    started = time.perf_counter()
    together: list[np.ndarray | None] = [None] * len(prompts)
    calls = 0
    for length, indices in by_length.items():
        size = max(1, min(args.streams, 512 // length))
        for start in range(0, len(indices), size):
            group = indices[start : start + size]
            for index, logits in zip(group, decode_together(group), strict=True):
                together[index] = logits.copy()
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
