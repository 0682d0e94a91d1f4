"""The benchmark: how close each job gets to llama.cpp's own speed on this machine, in ONE run.

Absolute times mean little on a shared, noisy machine, so every figure is set beside a reference
measured in the same run on the same loaded model:

- the floor: llama-cpp-python with no app code, a 512-token prompt (prompt processing) and
  greedy one-token steps (generation);
- sentiment, one text at a time: ours vs the article's method (its own short prompt, free
  generation of up to 10 tokens, substring test) and vs ours with early exit off (the head on
  a full forward pass), interleaved text by text;
- `allinone classify` of 200 texts in a fresh process, start included, vs a fresh process
  running the article's method on the same texts;
- sentiment over a list (the path `classify FILE` and the server's list input take): sentences/s
  and user-text tokens/s vs the prompt-processing floor, measured again right before and after
  the list (the floor drifts by several percent over minutes here);
- chat: first streamed piece after the role prefix is cached, and generation tokens/s vs the
  generation floor; the combined flow (sentiment, example group, a 64-token reply): its first
  piece with no prefix in memory (as a fresh process meets it: example groups come from the
  disk cache) and again with every prefix in memory, and its wall time;
- a fresh CLI process: start to first answer, and peak RSS after sentiment + chat;
- that no speed trick changes a decision: labels from the cached prefix, from a cold cache (as a
  fresh process computes them), from the list path and from a full pass (no early exit) must
  all agree, and so must the trie walk and llama.cpp's own GBNF sampler on the label logits;
- on a real `allinone serve` process (app/measure/serving.py): Open WebUI's 36-tool block cold
  and cached, with the server's RSS, and a follow-up turn kept by the server (Responses API)
  against the same turns sent whole (chat completions). Printed figures, no targets.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import load_settings
from app.errors import InputError
from app.llm.decode_thread import on_decode_thread
from app.measure import batched, concurrency, metrics, serving

if TYPE_CHECKING:
    from app.measure.evaluation import Example

CHAT_MESSAGES = (
    "今天又被老板骂了。",
    "我今天升职了！",
    "最近总是睡不好，怎么办？",
    "周末想出去走走，有什么建议吗？",
    "考试没考好，感觉自己好失败。",
    "朋友送了我一只小猫，好开心。",
)
PROBE_TEXT = "这家酒店的服务非常好。"


@dataclass(frozen=True)
class Check:
    """One line of the table: our figure, its reference, the ratio and the target."""

    measure: str
    ours: float
    unit: str
    reference: float | None = None
    reference_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.reference if self.reference else None


# -- the floor ------------------------------------------------------------------------------


def raw_floor(assistant, texts: Sequence[str], repeats: int = 3) -> dict[str, float]:
    """llama.cpp through llama-cpp-python alone: prompt processing and greedy generation."""
    engine = assistant.engine
    tokens = _floor_tokens(engine, texts)
    pp_times, gen_rates = [], []
    for _ in range(repeats):
        pp_times.append(_time_prompt(engine, tokens))
        gen_rates.append(_generation_rate(engine))
    engine.forget()
    return {
        "prompt_tokens": len(tokens),
        "pp_tokens_per_s": len(tokens) / statistics.median(pp_times),
        "gen_tokens_per_s": statistics.median(gen_rates),
    }


def _generation_rate(engine, steps: int = 64) -> float:
    """Greedy one-token steps after what the engine's context holds, tokens/s."""
    started = time.perf_counter()
    engine.greedy_steps(steps)
    return steps / (time.perf_counter() - started)


def raw_generation_rate(assistant, texts: Sequence[str]) -> float:
    """The generation floor alone (after ~512 prompt tokens), to set beside a reply."""
    engine = assistant.engine
    _time_prompt(engine, _floor_tokens(engine, texts))
    rate = _generation_rate(engine)
    engine.forget()
    return rate


def raw_prompt_rate(assistant, texts: Sequence[str], repeats: int = 3) -> float:
    """The prompt-processing floor alone (tokens/s), to measure right beside another figure."""
    engine = assistant.engine
    tokens = _floor_tokens(engine, texts)
    seconds = statistics.median(_time_prompt(engine, tokens) for _ in range(repeats))
    engine.forget()
    return len(tokens) / seconds


def _floor_tokens(engine, texts: Sequence[str]) -> list[int]:
    """About 512 tokens of the texts themselves, as one prompt."""
    tokens: list[int] = []
    for text in texts:
        tokens += engine.tokenize(text)
        if len(tokens) >= 512:
            break
    return tokens[: min(512, engine.n_ctx - 80)]


def _time_prompt(engine, tokens: list[int]) -> float:
    """Seconds for llama-cpp-python to evaluate `tokens` from an empty context."""
    engine.forget()
    started = time.perf_counter()
    # On the thread every decode of the process runs on: from this one, OpenMP would make a
    # second team of threads, and every later decode would pay for it (app/llm/decode_thread.py).
    on_decode_thread(engine.llm.eval, tokens)
    return time.perf_counter() - started


# -- sentiment --------------------------------------------------------------------------------


def sentiment_single(
    assistant, examples: Sequence[Example], progress: Callable[[int], None] | None = None
) -> dict[str, object]:
    """Ours, ours without early exit, and the article's method, interleaved text by text, as
    the eval harness runs them."""
    from app.measure import evaluation

    ours, full, article = evaluation.run(
        examples,
        {
            name: evaluation.build_method(name, assistant=assistant)
            for name in ("allinone", "fullpass", "article")
        },
        progress,
    )
    return {
        "ours_ms": ours.latencies_ms,
        "fullpass_ms": full.latencies_ms,
        "article_ms": article.latencies_ms,
        "labels": ours.predictions,
        "fullpass_labels": full.predictions,
    }


LIST_CHUNKS = 5  # the list is timed in chunks, each right after a floor measurement


def sentiment_list(assistant, texts: Sequence[str]) -> dict[str, object]:
    """The list path (`classify_many`), timed in LIST_CHUNKS chunks of texts of neighbouring
    lengths, the prompt-processing floor measured right before each chunk and after the last.

    Why interleaved: on this shared machine the floor drifts by 10-20% within a minute
    (measured: 170-230 tokens/s in one process), so a ratio to a floor taken minutes apart, or
    even before and after a minute-long list, swung between 0.9x and 1.26x for one build.
    """
    lengths = [len(assistant.engine.tokenize(text)) for text in texts]
    # Chunks of texts of neighbouring lengths, as the list path groups them anyway: chunks in
    # file order left more texts without a partner of a close length (measured: 5.4% padding
    # instead of 2.2%, 8 texts decoded alone instead of 2).
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    size = -(-len(texts) // LIST_CHUNKS)
    labels: list[str] = [""] * len(texts)
    floors, seconds = [], 0.0
    for start in range(0, len(texts), size):
        chunk = order[start : start + size]
        floors.append(raw_prompt_rate(assistant, texts, repeats=1))
        started = time.perf_counter()
        verdicts = list(assistant.classify_many([texts[index] for index in chunk]))
        seconds += time.perf_counter() - started  # after the generator has run: list() above
        for index, verdict in zip(chunk, verdicts, strict=True):
            labels[index] = verdict.label
    floors.append(raw_prompt_rate(assistant, texts, repeats=1))
    user_tokens = sum(lengths)
    # Everything decoded after the cached prefix: the user text plus the template's tail.
    prompts = [assistant.prompt_for(assistant.roles.sentiment, text) for text in texts]
    decoded = sum(len(prompt.tokens) - prompt.prefix_len for prompt in prompts)
    return {
        "labels": labels,
        "seconds": seconds,
        "sentences_per_s": len(texts) / seconds,
        "user_tokens_per_s": user_tokens / seconds,
        "decoded_tokens_per_s": decoded / seconds,
        "user_share_percent": 100 * user_tokens / decoded,
        "floor_pp_tokens_per_s": statistics.mean(floors),
        "floors_pp_tokens_per_s": floors,
    }


def cold_cache_labels(assistant, texts: Sequence[str]) -> list[str]:
    """Labels with every saved prefix state dropped first: what a fresh process computes."""
    labels = []
    for text in texts:
        assistant.engine.forget(prefixes=True)
        labels.append(assistant.sentiment(text).label)
    return labels


def grammar_agreement(assistant, texts: Sequence[str]) -> list[bool]:
    """Per text: do the trie walk over the label logits and llama.cpp's GBNF sampler agree?"""
    return [
        assistant.sentiment(text, decode="logits").label
        == assistant.sentiment(text, decode="grammar").label
        for text in texts
    ]


# -- chat -----------------------------------------------------------------------------------


def chat(
    assistant, messages: Sequence[str], floor_texts: Sequence[str], max_tokens: int = 64
) -> dict[str, object]:
    """First streamed piece and generation speed of the chat role, each reply right after a
    raw generation floor (the floor drifts: see `sentiment_list`); then the combined flow."""
    engine = assistant.engine
    options = {"max_tokens": max_tokens, "seed": 1}
    "".join(assistant.reply(messages[0], **options))  # caches the role prefix
    first_ms, rates, tokens, floors = [], [], [], []
    for message in messages:
        floors.append(raw_generation_rate(assistant, floor_texts))
        before = engine.generated_tokens
        started = time.perf_counter()
        first = last = None
        for _piece in assistant.reply(message, **options):
            last = time.perf_counter()
            first = first or last
        made = engine.generated_tokens - before
        if first is None or last is None:
            continue
        first_ms.append((first - started) * 1000)
        tokens.append(made)
        if made > 2 and last > first:
            rates.append((made - 1) / (last - first))
    assistant.prepare_bank()
    # First pass as a fresh process meets it: no prefix in memory (the mood role's, the chat
    # tones', the example groups'); the groups' come from the disk cache prepare_bank keeps.
    engine.forget(prefixes=True)
    combined_ms, feel_first_ms = [], {"cold": [], "cached": []}
    for state in ("cold", "cached"):
        for message in messages:
            started = time.perf_counter()
            _verdict, stream = assistant.respond(message, **options)
            first = None
            for _piece in stream:
                first = first or time.perf_counter()
            done = time.perf_counter()
            feel_first_ms[state].append(((first or done) - started) * 1000)
            if state == "cold":
                combined_ms.append((done - started) * 1000)
    return {
        "first_piece_ms": first_ms,
        "gen_tokens_per_s": rates,
        "floor_gen_tokens_per_s": floors,
        "reply_tokens": tokens,
        "combined_ms": combined_ms,
        "feel_first_piece_ms": feel_first_ms,
    }


# -- a fresh CLI process ----------------------------------------------------------------------

_PEAK_WRAPPER = """
import atexit, sys
peak_file = sys.argv[1]
def report():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(peak_file, 'w').write(line.split()[1])
atexit.register(report)
sys.argv = ['allinone', *sys.argv[2:]]
from app.cli import main
main()
"""


# The article's method over a file of texts, one per line, in a fresh process.
_ARTICLE_RUN = """
import sys
from app.roles.assistant import Assistant
from app.measure.evaluation import article_method
predict = article_method(Assistant.load())
for line in open(sys.argv[1], encoding='utf-8'):
    if line.strip():
        predict(line.strip())
"""


def cli_process(args: Sequence[str], settings: dict[str, object]) -> tuple[float, float]:
    """Run `allinone ARGS` in a fresh process: (seconds from start to exit, peak RSS in MB)."""
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        seconds = _child([_PEAK_WRAPPER, str(peak_file), *args], settings, f"allinone {args[0]}")
        peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    return seconds, peak_mb


def _child(code_and_args: Sequence[str], settings: dict[str, object], name: str) -> float:
    """Seconds for `python -c CODE ARGS...` to run from start to exit, with our settings."""
    env = {**os.environ}
    env.update({f"ALLINONE_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    started = time.perf_counter()
    command = [sys.executable, "-c", *code_and_args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:]
        raise InputError(f"`{name}` failed in the benchmark: {tail}")
    return seconds


def classify_file(texts: Sequence[str], settings: dict[str, object]) -> dict[str, float]:
    """`allinone classify FILE` and the article's method on the same texts, each in a fresh
    process, start included: what a user waiting for a file of reviews sees."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "texts.txt"
        lines = [" ".join(text.split()) for text in texts]
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = Path(folder) / "labels.jsonl"
        ours, _ = cli_process(["classify", str(source), "-o", str(out)], settings)
        article = _child([_ARTICLE_RUN, str(source)], settings, "the article's method")
    return {"texts": len(texts), "ours_s": ours, "article_s": article}


def fresh_process(settings: dict[str, object]) -> dict[str, float]:
    """Start to first answer (warm page cache: the second of two runs), and the peak RSS of
    `chat --once`, which runs sentiment and then a 64-token reply."""
    cli_process(["classify", PROBE_TEXT], settings)
    ready_s, _ = cli_process(["classify", PROBE_TEXT], settings)
    _, peak_mb = cli_process(["chat", "--once", CHAT_MESSAGES[0], "--max-tokens", "64"], settings)
    return {"ready_s": ready_s, "peak_rss_mb": peak_mb}


# -- the table ------------------------------------------------------------------------------


def checks(results: dict[str, object], model_mb: float) -> list[Check]:
    """The table's rows for the parts of `results` that ran."""
    rows = _core_checks(results, model_mb) if "single" in results else []
    return rows + batched_checks(results.get("batched")) + served_checks(results)


def batched_checks(results: dict[str, Any] | None) -> list[Check]:
    """Our replies decoded together against llama-batched-bench's generation speed, per
    stream count: greedy, then with the chat role's sampling and guards (app/measure/batched.py).
    Where the tool could not run, the reference column says why."""
    if not results:
        return []
    reference = batched.medians(results, "reference")
    missing = results.get("missing")
    rows = []
    for name, label in (("greedy", "greedy"), ("chat", "chat sampling + guards")):
        for streams, speed in sorted(batched.medians(results, name).items()):
            target = 0.95 if streams == 1 else 0.90
            against = reference.get(streams)
            replies = "reply" if streams == 1 else "replies"
            rows.append(
                Check(
                    f"{streams} {replies} at once, {label}: generation tokens/s",
                    speed,
                    "tokens/s",
                    against,
                    "llama-batched-bench S_TG, -fa off" if against else f"none: {missing}",
                    f">= {target:.2f}x",
                    speed >= target * against if against else None,
                )
            )
    return rows


def _core_checks(results: dict[str, object], model_mb: float) -> list[Check]:
    single = results["single"]
    listed, talk, fresh = results["list"], results["chat"], results["fresh"]
    ours_p50 = statistics.median(single["ours_ms"])
    article_p50 = statistics.median(single["article_ms"])
    full_p50 = statistics.median(single["fullpass_ms"])
    first_ms = statistics.median(talk["first_piece_ms"])
    list_floor = listed["floor_pp_tokens_per_s"]
    whole = results["classify_file"]
    rows = [
        Check(
            "sentiment, one text: median ms",
            ours_p50,
            "ms",
            article_p50,
            "article's method",
            "<= 0.40x",
            ours_p50 <= 0.4 * article_p50,
        ),
        Check(
            "sentiment, one text: p90 ms",
            metrics.percentile(single["ours_ms"], 90),
            "ms",
            metrics.percentile(single["article_ms"], 90),
            "article's method",
        ),
        Check(
            "sentiment, one text: median ms, early exit",
            ours_p50,
            "ms",
            full_p50,
            "same head, full forward pass",
            "<= 0.80x",
            ours_p50 <= 0.8 * full_p50,
        ),
        Check(
            f"classify {whole['texts']} texts, process start included, s",
            whole["ours_s"],
            "s",
            whole["article_s"],
            "article's method, fresh process",
            "<= 0.40x",
            whole["ours_s"] <= 0.4 * whole["article_s"],
        ),
        Check(
            "sentiment, list: user-text tokens/s",
            listed["user_tokens_per_s"],
            "tok/s",
            list_floor,
            "raw prompt processing, between the list's chunks",
            ">= 1.15x",
            listed["user_tokens_per_s"] >= 1.15 * list_floor,
        ),
        Check(
            "sentiment, list: all tokens after the prefix/s",
            listed["decoded_tokens_per_s"],
            "tok/s",
            list_floor,
            "raw prompt processing, between the list's chunks",
        ),
        Check("sentiment, list: user text's share of them", listed["user_share_percent"], "%"),
        Check("sentiment, list: sentences/s", listed["sentences_per_s"], "/s"),
        Check(
            "chat: generation tokens/s",
            statistics.median(talk["gen_tokens_per_s"]),
            "tok/s",
            statistics.median(talk["floor_gen_tokens_per_s"]),
            "raw generation, before each reply",
            ">= 0.95x",
            statistics.median(talk["gen_tokens_per_s"])
            >= 0.95 * statistics.median(talk["floor_gen_tokens_per_s"]),
        ),
        Check(
            "chat: first piece, prefix cached, ms",
            first_ms,
            "ms",
            target="<= 150 ms",
            met=first_ms <= 150,
        ),
        Check(
            "feel + reply: first piece, median ms (fresh process)",
            statistics.median(talk["feel_first_piece_ms"]["cold"]),
            "ms",
            target="<= 500 ms",
            met=statistics.median(talk["feel_first_piece_ms"]["cold"]) <= 500,
        ),
        Check(
            "feel + reply: first piece, median ms (prefixes in memory)",
            statistics.median(talk["feel_first_piece_ms"]["cached"]),
            "ms",
        ),
        Check(
            "sentiment + 64-token reply: median ms",
            statistics.median(talk["combined_ms"]),
            "ms",
        ),
        Check(
            "fresh CLI: start to first answer, s",
            fresh["ready_s"],
            "s",
            target="<= 2 s",
            met=fresh["ready_s"] <= 2.0,
        ),
        Check(
            "fresh CLI: peak RSS after sentiment + chat, MB",
            fresh["peak_rss_mb"],
            "MB",
            model_mb,
            "GGUF file size",
            "<= GGUF + 250 MB",
            fresh["peak_rss_mb"] <= model_mb + 250,
        ),
    ]
    same = results["same_labels"]
    rows.append(
        Check(
            "identical labels: cached / cold / list / full pass; logits = GBNF",
            same["agree"],
            "texts",
            same["texts"],
            "texts",
            "all",
            same["agree"] == same["texts"],
        )
    )
    if "concurrency" in results:  # --parallel above 1: chats decoded together
        solo, many = results["concurrency"]["alone"], results["concurrency"]["together"]
        streams = many["streams"]
        rows += [
            Check(
                f"{streams} chats at once: total tokens/s",
                many["tokens_per_s"],
                "tokens/s",
                solo["tokens_per_s"],
                "one chat alone",
                ">= 2.0x",
                many["tokens_per_s"] >= 2.0 * solo["tokens_per_s"],
            ),
            Check(
                f"sentiment while {streams} chats stream: ms",
                many["sentiment_ms"],
                "ms",
                None,
                "",
                "< 1000 ms",
                many["sentiment_ms"] < 1000,
            ),
        ]
    return rows


def served_checks(results: dict[str, Any]) -> list[Check]:
    """Rows of the served measures (figures beside their reference, no target)."""
    rows: list[Check] = []
    tools = results.get(serving.PARTS[0])
    if tools:
        cold, cached = tools["cold"], tools["cached"]
        name = f"{tools['tools']} tools"
        rows.append(
            Check(
                f"{name}, new message: first piece, s (median; a call goes out whole)",
                tools["cached_first_s"],
                "s",
                cold["first_s"],
                "first message, tools block cold",
            )
        )
        for label, turn in [("first message", cold), *(("new message", t) for t in cached)]:
            reply = "a call" if turn["calls"] else "prose"
            rows.append(
                Check(
                    f"{name}, {label} ({reply}): cached prompt tokens",
                    turn["cached_tokens"],
                    "tokens",
                    turn["prompt_tokens"],
                    "its prompt tokens",
                )
            )
        rows += [
            Check(
                "serve: RSS after the tools block, MB",
                tools["rss_after_mb"],
                "MB",
                tools["rss_before_mb"],
                "before it",
            ),
            Check(
                "serve: peak RSS, MB", tools["rss_peak_mb"], "MB", tools["rss_before_mb"], "before"
            ),
        ]
    follow = results.get(serving.PARTS[1])
    if follow:
        for turn in range(1, follow["turns"]):
            kept, whole = follow["responses"][turn], follow["stateless"][turn]
            name = f"follow-up turn {turn + 1}"
            rows.append(
                Check(
                    f"{name}: first piece, s, previous_response_id",
                    kept["first_s"],
                    "s",
                    whole["first_s"],
                    "history sent whole, store false",
                )
            )
            for way, timed in (("previous_response_id", kept), ("history sent whole", whole)):
                rows.append(
                    Check(
                        f"{name}: cached prompt tokens, {way}",
                        timed["cached_tokens"],
                        "tokens",
                        timed["prompt_tokens"],
                        "its prompt tokens",
                    )
                )
    return rows


def table(rows: Sequence[Check]) -> str:
    lines = [
        "| measure | ours | reference | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        if row.reference is not None:
            reference = f"{_number(row.reference)} ({row.reference_name})"
        else:  # a reference that could not be measured says why (e.g. a tool not built)
            reference = row.reference_name
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(
            f"| {row.measure} | {_number(row.ours)} {row.unit} | {reference} | {ratio} | "
            f"{row.target} | {met} |"
        )
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def chart(rows: Sequence[Check], path: Path, title: str) -> Path | None:
    """The ratios against their targets as bars; None if matplotlib is missing."""
    from app.measure.report import pyplot, save

    plt = pyplot()
    if plt is None:
        return None
    shown = [row for row in rows if row.ratio is not None and "labels" not in row.measure]
    # Two-line names: about half an inch a row, so the served rows do not overlap the others.
    figure, axis = plt.subplots(figsize=(9, max(3.6, 1.0 + 0.5 * len(shown))))
    names = [row.measure.replace(": ", ":\n") for row in shown]
    colors = [
        "tab:green" if row.met else "tab:red" if row.met is False else "tab:gray" for row in shown
    ]
    axis.barh(names, [row.ratio for row in shown], color=colors)
    for index, row in enumerate(shown):
        axis.annotate(
            f"{row.ratio:.2f}x  (target {row.target or '-'})",
            (row.ratio, index),
            va="center",
            fontsize=8,
            xytext=(4, 0),
            textcoords="offset points",
        )
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xlim(0, max(row.ratio for row in shown) * 1.6)
    axis.invert_yaxis()
    axis.set_xlabel("ours / reference (green: target met, red: missed)")
    axis.set_title(title)
    return save(figure, path)


def write(
    out_dir: Path, context: str, rows: Sequence[Check], results: dict, settings: Any
) -> list[Path]:
    """bench.md (table + chart), bench.png and bench.json (the checks and every raw figure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = chart(rows, out_dir / "bench.png", "All-in-One vs its references, one run")
    image = f"![ratios]({png.name})\n" if png else "(chart skipped: install matplotlib)\n"
    report = out_dir / "bench.md"
    report.write_text(f"# Benchmark\n\n{context}\n\n{table(rows)}\n\n{image}", encoding="utf-8")
    payload = {
        "context": context,
        "settings": settings.model_dump(mode="json"),
        "checks": [{**vars(row), "ratio": row.ratio} for row in rows],
        "raw": results,
    }
    data = out_dir / "bench.json"
    data.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return [report, data, *([png] if png else [])]


# -- one run ------------------------------------------------------------------------------


PARTS = ("core", "batched", *serving.PARTS)  # what `run(only=...)` can name


def run(
    assistant,
    examples: Sequence[Example],
    settings: dict[str, object],
    progress: Callable[[str, int], None] | None = None,
    only: Sequence[str] = PARTS,
) -> dict[str, object]:
    """Every measurement above, in one process on one loaded model (plus the fresh-CLI runs and
    the served ones), or only the PARTS named (the served ones need no `assistant`)."""

    def step(name: str, amount: int = 1) -> None:
        if progress:
            progress(name, amount)

    unknown = set(only) - set(PARTS)
    if unknown:
        raise InputError(f"Unknown benchmark part(s) {sorted(unknown)}; choose from {PARTS}.")
    results = _core(assistant, examples, settings, step) if "core" in only else {}
    if "batched" in only and getattr(assistant.engine, "parallel", 1) > 1:
        cache_dir = load_settings(**settings).cache_dir
        results["batched"] = batched.run(assistant, cache_dir, progress=step)
    served = tuple(part for part in serving.PARTS if part in only)
    if served:
        results.update(serving.run(settings, served))
        step("served: " + ", ".join(served), len(served))
    return results


def _core(
    assistant, examples: Sequence[Example], settings: dict[str, object], step: Callable[..., None]
) -> dict[str, object]:
    """The in-process measures, the fresh CLI processes and the classified file."""
    texts = [example.text for example in examples]
    results: dict[str, object] = {"texts": len(texts)}
    results["floor"] = raw_floor(assistant, texts)
    step("floor")
    results["single"] = single = sentiment_single(
        assistant, examples, lambda n: step("sentiment", n)
    )
    results["list"] = listed = sentiment_list(assistant, texts)
    step("list", len(texts))
    cold = cold_cache_labels(assistant, texts)
    step("cold cache", len(texts))
    grammar_same = grammar_agreement(assistant, texts)
    step("grammar", len(texts))
    same = [
        a == b == c == d
        for a, b, c, d in zip(
            single["labels"], cold, listed["labels"], single["fullpass_labels"], strict=True
        )
    ]
    results["same_labels"] = {
        "texts": len(texts),
        "cached_cold_list_fullpass": sum(same),
        "logits_gbnf": sum(grammar_same),
        "agree": sum(a and b for a, b in zip(same, grammar_same, strict=True)),
    }
    results["chat"] = chat(assistant, CHAT_MESSAGES, texts)
    step("chat")
    if getattr(assistant.engine, "parallel", 1) > 1:
        results["concurrency"] = {
            "alone": concurrency.alone(assistant, repeats=2),
            "together": concurrency.together(assistant, streams=4),
        }
        step("chats at once")
    results["fresh"] = fresh_process(settings)
    step("fresh process")
    results["classify_file"] = classify_file(texts[:200], settings)
    step("classify a file")
    return results
