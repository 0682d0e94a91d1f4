#!/usr/bin/env python3
"""Rows/s of classify on one process and on Ray actors, and the memory each actor costs.

    python scripts/ray_bench.py --rows 240

Three configurations on the same rows of the shipped training texts (never the dev set): one
process with 2 llama.cpp threads (what `allinone classify FILE` does), Ray with 1 actor x 2
threads, and Ray with 2 actors x 1 thread (both through `classify_dataset`, in-process Ray with
as many CPUs as the machine has). For each: rows/s end to end (Ray start excluded, model loads
included) and steady (from the first finished batch to the last, which is what a long run
sees), per actor too. While the actors run, /proc/PID/smaps_rollup gives each one's RSS and PSS,
and /proc/PID/smaps the mapped GGUF's own RSS and PSS: a PSS of the mapping near half its RSS
with two actors means they share the file's pages. Then a worked estimate for 1,000,000
reviews on N machines of C cores from the measured per-actor rate. Loads the model: run it
alone (flock /tmp/model.lock python scripts/ray_bench.py).
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import itertools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def shipped_texts(rows: int) -> list[str]:
    with gzip.open(ROOT / "data" / "reviews_train.csv.gz", "rt", encoding="utf-8") as file:
        return [row["text"] for row in itertools.islice(csv.DictReader(file), rows)]


def single_process(texts: list[str], window: int) -> dict:
    """`allinone classify FILE`'s path: one model, 2 threads, classify_many by windows."""
    from app.jobs.files import windows
    from app.roles.assistant import Assistant

    started = time.perf_counter()
    assistant = Assistant.load(n_threads=2)
    loaded = time.perf_counter()
    labels = []
    for part in windows(texts, window):
        labels += [v.label for v in assistant.classify_many(part)]
    ended = time.perf_counter()
    memory = memory_of(os.getpid())
    del assistant
    gc.collect()
    return {
        "name": "single process, 2 threads",
        "actors": 1,
        "end_to_end": len(texts) / (ended - started),
        "steady": len(texts) / (ended - loaded),
        "memory": [memory],
        "labels": labels,
    }


def on_ray(texts: list[str], actors: int, threads: int, window: int) -> dict:
    import ray

    from app.jobs.ray_classify import classify_dataset

    items = [{"id": i, "text": text} for i, text in enumerate(texts)]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(texts) // window))
    labelled = classify_dataset(dataset, actors=actors, threads_per_actor=threads, window=window)
    started = time.perf_counter()
    first = last = None
    rows_after_first = 0
    labels: dict[int, str] = {}
    memory: dict[int, dict] = {}
    for batch in labelled.iter_batches(batch_size=None, batch_format="pyarrow"):
        now = time.perf_counter()
        if first is None:
            first = now
        else:
            rows_after_first += batch.num_rows
        last = now
        ids, names = batch.column("id").to_pylist(), batch.column("label").to_pylist()
        labels.update(zip(ids, names, strict=True))
        # All actors at one moment (PSS splits a shared page between the processes mapping it
        # then): the latest moment at which every actor had the model mapped.
        snapshot = {pid: memory_of(pid) for pid in actor_pids()}
        snapshot = {pid: sample for pid, sample in snapshot.items() if sample["gguf_rss"]}
        if len(snapshot) >= len(memory):
            memory = snapshot
    return {
        "name": f"Ray, {actors} actor{'s' if actors > 1 else ''} x {threads} thread"
        + ("s" if threads > 1 else ""),
        "actors": actors,
        "end_to_end": len(texts) / (last - started),
        "steady": rows_after_first / (last - first) if last > first else float("nan"),
        "memory": list(memory.values()),  # one entry per actor that loaded the model
        "labels": [labels[i] for i in range(len(texts))],
    }


def actor_pids() -> list[int]:
    """The map_batches actors started under this process's Ray."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in title and _is_below(int(entry.name), os.getpid()):
                found.append(int(entry.name))
    return found


def _is_below(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


def memory_of(pid: int) -> dict:
    """RSS and PSS of the process, and of its mapping of the .gguf file (zeros if it is gone)."""
    try:
        rollup = _fields(Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines())
        smaps = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {"rss": 0, "pss": 0, "gguf_rss": 0, "gguf_pss": 0}
    gguf = {"Rss": 0, "Pss": 0}
    current = None
    for line in smaps:
        parts = line.split()
        if len(parts) >= 6 and "-" in parts[0] and ":" not in parts[0]:
            current = parts[5] if parts[5].endswith(".gguf") else None
        elif current and parts and parts[0] in ("Rss:", "Pss:"):
            gguf[parts[0][:-1]] += int(parts[1]) * 1024
    return {
        "rss": rollup["Rss"],
        "pss": rollup["Pss"],
        "gguf_rss": gguf["Rss"],
        "gguf_pss": gguf["Pss"],
    }


def _fields(lines: list[str]) -> dict[str, int]:
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=240, help="rows (default: %(default)s)")
    parser.add_argument("--window", type=int, default=16, help="rows per batch (%(default)s)")
    args = parser.parse_args()
    texts = shipped_texts(args.rows)
    results = [single_process(texts, args.window)]

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        results.append(on_ray(texts, actors=1, threads=2, window=args.window))
        results.append(on_ray(texts, actors=2, threads=1, window=args.window))
    finally:
        ray.shutdown()

    print(
        f"{len(texts)} rows of the shipped training texts, {os.cpu_count()} cores, "
        f"batches of {args.window} rows.\n"
    )
    print(
        "| configuration | rows/s end to end | rows/s steady | per actor, steady | "
        "RSS per actor | PSS per actor | GGUF mapping RSS / PSS per actor | labels = single |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    reference = results[0]["labels"]
    for result in results:
        memory = result["memory"] or [{"rss": 0, "pss": 0, "gguf_rss": 0, "gguf_pss": 0}]
        rss = sum(m["rss"] for m in memory) / len(memory) / MB
        pss = sum(m["pss"] for m in memory) / len(memory) / MB
        g_rss = sum(m["gguf_rss"] for m in memory) / len(memory) / MB
        g_pss = sum(m["gguf_pss"] for m in memory) / len(memory) / MB
        same = sum(a == b for a, b in zip(result["labels"], reference, strict=True))
        print(
            f"| {result['name']} | {result['end_to_end']:.2f} | {result['steady']:.2f} | "
            f"{result['steady'] / result['actors']:.2f} | {rss:.0f} MB | {pss:.0f} MB | "
            f"{g_rss:.0f} / {g_pss:.0f} MB | {same}/{len(reference)} |"
        )
        if len(memory) != result["actors"]:
            print(f"  (memory sampled on {len(memory)} of {result['actors']} actors)")
    best = max(results[1:], key=lambda r: r["steady"])
    per_core = best["steady"] / (os.cpu_count() or 1)
    print(
        f"\nEstimate from the best Ray configuration ({best['name']}: {per_core:.2f} rows/s "
        "per core), assuming rows/s grows with cores (one actor per core, or per 2 cores):\n"
    )
    print("| machines x cores | rows/s | 1,000,000 reviews |")
    print("| --- | ---: | ---: |")
    for machines, cores in [(1, 2), (1, 16), (4, 16), (16, 16), (64, 32)]:
        rate = per_core * machines * cores
        hours = 1_000_000 / rate / 3600
        took = f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        print(f"| {machines} x {cores} | {rate:,.0f} | {took} |")


if __name__ == "__main__":
    main()
