"""Measure sentiment methods side by side on a labelled file, in one run on one loaded model.

Methods share the loaded model and differ only in how the answer is read:
- `allinone`: the shipped way, the label chosen from the label logits (= greedy decoding under
  the labels' GBNF grammar) with its probability;
- `published`: the published All-in-One way, free generation of up to 10 new tokens and a
  substring test for 正面 (anything else counts as 负面), reading the whole prompt each time
  as the published code does (no prefix cache).
Both use the same role prompt, so accuracy differs by the decoding alone.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.dispatcher import Assistant
from app.engine import Prompt, Sampling
from app.errors import InputError

LABELS = ("正面", "负面")


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    label: str


@dataclass
class MethodResult:
    name: str
    predictions: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def accuracy(self, gold: Sequence[str]) -> float:
        return sum(p == g for p, g in zip(self.predictions, gold, strict=True)) / len(gold)

    def macro_f1(self, gold: Sequence[str]) -> float:
        scores = []
        for label in LABELS:
            tp = sum(p == g == label for p, g in zip(self.predictions, gold, strict=True))
            fp = sum(p == label != g for p, g in zip(self.predictions, gold, strict=True))
            fn = sum(g == label != p for p, g in zip(self.predictions, gold, strict=True))
            scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return sum(scores) / len(scores)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_labelled(path: Path, limit: int | None = None) -> list[Example]:
    """`text,label` CSV or JSONL; every problem is reported with its line number."""
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if line.strip():
                    try:
                        rows.append((number, json.loads(line)))
                    except json.JSONDecodeError as error:
                        raise InputError(
                            f"{path}, line {number}: invalid JSON ({error.msg})."
                        ) from None
    else:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            missing = {"text", "label"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path}: missing column(s) {sorted(missing)}; need text,label.")
            rows = [(reader.line_num, record) for record in reader]
    examples = []
    for number, record in rows:
        text, label = str(record.get("text") or ""), str(record.get("label") or "")
        if not text.strip():
            raise InputError(f"{path}, line {number}: empty text.")
        if label not in LABELS:
            raise InputError(f"{path}, line {number}: unknown label {label!r}; use 正面 or 负面.")
        examples.append(Example(number, text, label))
    return examples[:limit] if limit else examples


def published_method(assistant: Assistant) -> Callable[[str], str]:
    """The published decoding: generate up to 10 tokens freely, then look for 正面."""
    role = assistant.roles.sentiment
    sampling = Sampling(temperature=0.0, repeat_penalty=1.0, max_tokens=10)

    def predict(text: str) -> str:
        whole = assistant._prompt(role, text)
        prompt = Prompt(tokens=whole.tokens, prefix_len=0)  # no prefix: nothing is cached
        assistant.engine.forget()
        output = "".join(assistant.engine.stream(prompt, sampling))
        return "正面" if "正面" in output else "负面"

    return predict


def methods(assistant: Assistant) -> dict[str, Callable[[str], str]]:
    return {
        "allinone": lambda text: assistant.sentiment(text).label,
        "published": published_method(assistant),
    }


def evaluate(
    assistant: Assistant,
    examples: Sequence[Example],
    names: Sequence[str] = ("allinone", "published"),
    progress: Callable[[int], None] | None = None,
) -> list[MethodResult]:
    """Run each method over every example, interleaved so machine noise hits all alike."""
    available = methods(assistant)
    unknown = set(names) - set(available)
    if unknown:
        raise InputError(f"Unknown method(s): {sorted(unknown)}; choose from {sorted(available)}.")
    for name in names:  # warm each method's prefix once, outside the timings
        available[name](examples[0].text)
    results = {name: MethodResult(name) for name in names}
    for example in examples:
        for name in names:
            started = time.perf_counter()
            prediction = available[name](example.text)
            results[name].latencies_ms.append((time.perf_counter() - started) * 1000)
            results[name].predictions.append(prediction)
        if progress:
            progress(1)
    return list(results.values())


def table(results: Sequence[MethodResult], gold: Sequence[str]) -> str:
    """A Markdown table: accuracy, macro-F1, median and p90 latency per method."""
    lines = [
        "| method | accuracy | macro-F1 | median ms | p90 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.accuracy(gold):.1%} | {result.macro_f1(gold):.3f} | "
            f"{statistics.median(result.latencies_ms):.0f} | {result.percentile_ms(0.9):.0f} |"
        )
    return "\n".join(lines)
