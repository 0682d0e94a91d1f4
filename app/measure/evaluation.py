"""The evaluation harness: sentiment methods side by side on one labelled file, in one run.

Methods (pick with --method):
- `allinone`: All-in-One as shipped (the sentiment role; label from the label logits, i.e. what
  greedy decoding under the labels' GBNF grammar writes, plus its probability);
- `published`: the published All-in-One decoding on the same prompt and model: free generation
  of up to 10 tokens, a substring test for 正面, the whole prompt read for every text;
- `article`: the article's own method on the same model: its short prompt (ARTICLE_PROMPT, no
  examples) with the published decoding: the reference the benchmark sets our speed beside;
- `fullpass`: All-in-One with every layer computed (the head reads the same states, the pass
  just does not stop after them): what early exit is measured against;
- `tfidf_lr`: char n-gram TF-IDF + logistic regression trained on reviews_train.csv;
- `snownlp`: SnowNLP's shipped sentiment model.
Latency is measured interleaved (text by text, method by method) so machine noise hits all alike.
Cold start and peak RSS are measured per method in a fresh child process: import, load, first
answer.
"""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.config import SOURCE_ROOT, bundled_file
from app.errors import InputError
from app.measure import metrics

LABELS = ("正面", "负面")
ALL_METHODS = ("allinone", "published", "article", "fullpass", "tfidf_lr", "snownlp")
LLM_METHODS = ("allinone", "published", "article", "fullpass")
# The article's prompt, word for word; it goes to the model as the user's message.
ARTICLE_PROMPT = (
    "你是一个冷酷的情感分析师。你的任务是对用户的每句话进行情绪极性判断。只能输出两个结果之一："
    "“正面” 或 “负面”。禁止解释、禁止扩展、禁止换行。 输入：{text} 输出："
)
# The labelled data the repository carries: train ships in the wheel, dev only in the checkout
# (its figures are the ones reported; an installed copy is given a file instead).
DEFAULT_TRAIN = bundled_file("reviews_train.csv.gz", "data/reviews_train.csv.gz")
DEFAULT_DEV = SOURCE_ROOT / "data" / "reviews_dev.csv"
Predict = Callable[[str], tuple[str, float]]


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    label: str


@dataclass
class MethodResult:
    """Everything measured for one method; the derived figures come from `summary()`."""

    name: str
    predictions: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cold_start_s: float | None = None
    peak_rss_mb: float | None = None

    def summary(self, gold: Sequence[str]) -> dict[str, object]:
        correct = [p == g for p, g in zip(self.predictions, gold, strict=True)]
        total_s = sum(self.latencies_ms) / 1000
        return {
            "method": self.name,
            "n": len(gold),
            "accuracy": metrics.accuracy(gold, self.predictions),
            "macro_f1": metrics.macro_f1(gold, self.predictions, LABELS),
            "per_class": {
                k: asdict(v) for k, v in metrics.per_class(gold, self.predictions, LABELS).items()
            },
            "confusion": metrics.confusion(gold, self.predictions, LABELS),
            "ece": metrics.expected_calibration_error(self.confidences, correct),
            "p50_ms": metrics.percentile(self.latencies_ms, 50),
            "p90_ms": metrics.percentile(self.latencies_ms, 90),
            "texts_per_s": len(gold) / total_s if total_s else float("nan"),
            "cold_start_s": self.cold_start_s,
            "peak_rss_mb": self.peak_rss_mb,
        }


def load_labelled(path: Path, limit: int | None = None) -> list[Example]:
    """`text,label` CSV or JSONL; every problem is reported with its line number."""
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    rows: list[tuple[int, dict]] = []
    try:
        if path.suffix.lower() == ".jsonl":
            with path.open(encoding="utf-8") as file:
                for number, line in enumerate(file, start=1):
                    if line.strip():
                        rows.append((number, _json_row(path, number, line)))
        else:
            with path.open(encoding="utf-8-sig", newline="") as file:
                reader = csv.DictReader(file)
                missing = {"text", "label"} - set(reader.fieldnames or [])
                if missing:
                    raise InputError(
                        f"{path}: missing column(s) {sorted(missing)}; need text,label."
                    )
                rows = [(reader.line_num, record) for record in reader]
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8. Re-save the file as UTF-8.") from None
    problems, examples = [], []
    for number, record in rows:
        text, label = str(record.get("text") or ""), str(record.get("label") or "").strip()
        if not text.strip():
            problems.append(f"line {number}: empty text")
        elif label not in LABELS:
            problems.append(f"line {number}: unknown label {label!r} (use 正面 or 负面)")
        else:
            examples.append(Example(number, text, label))
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        raise InputError(f"{path}: {shown}.")
    if not examples:
        raise InputError(f"{path}: no labelled rows.")
    return examples[:limit] if limit else examples


def _json_row(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}, line {number}: invalid JSON ({error.msg}).") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}, line {number}: expected an object with text and label.")
    return record


def build_method(
    name: str, *, assistant=None, train: Path = DEFAULT_TRAIN, role: str | None = None
) -> Predict:
    """A predict(text) -> (label, confidence) function for one method.

    `role` picks the label role of the two LLM methods (default: the sentiment role).
    """
    if name in LLM_METHODS:
        role = _label_role(assistant, role)
    if name == "allinone":
        return lambda text: _verdict(assistant.classify(text, role))
    if name == "published":
        return published_method(assistant, role)
    if name == "article":
        return article_method(assistant)
    if name == "fullpass":
        return full_pass_method(assistant, role)
    if name == "tfidf_lr":
        from app.measure.baselines import tfidf_lr

        return tfidf_lr(train)
    if name == "snownlp":
        from app.measure.baselines import snownlp

        return snownlp()
    raise InputError(f"Unknown method {name!r}; choose from {', '.join(ALL_METHODS)}.")


def _label_role(assistant, role: str | None) -> str:
    """The role's name, checked up front: a bad --role fails before any row is run."""
    chosen = assistant.roles.get(role or assistant.roles.defaults.sentiment)
    if not chosen.is_classifier:
        raise InputError(f"Role {chosen.name!r} writes free text; eval needs a label role.")
    return chosen.name


def _verdict(verdict) -> tuple[str, float]:
    return verdict.label, verdict.confidence


def published_method(assistant, role: str | None = None) -> Predict:
    """The published decoding: generate up to 10 tokens freely, then look for 正面."""
    from app.llm import Prompt, Sampling

    chosen = assistant.roles.get(_label_role(assistant, role))
    sampling = Sampling(temperature=0.0, repeat_penalty=1.0, max_tokens=10)

    def predict(text: str) -> tuple[str, float]:
        whole = assistant.prompt_for(chosen, text)
        prompt = Prompt(tokens=whole.tokens, prefix_len=0)  # no prefix: nothing is cached
        assistant.engine.forget()
        output = "".join(assistant.engine.stream(prompt, sampling))
        return ("正面" if "正面" in output else "负面"), 1.0  # no probability: always "sure"

    return predict


def article_method(assistant) -> Predict:
    """The article's method: its prompt, free generation of up to 10 tokens, look for 正面."""
    from app.llm import Sampling

    sampling = Sampling(temperature=0.0, repeat_penalty=1.0, max_tokens=10)

    def predict(text: str) -> tuple[str, float]:
        message = {"role": "user", "content": ARTICLE_PROMPT.format(text=text)}
        prompt = assistant.engine.chat_prompt([message])  # no prefix: read whole every time
        assistant.engine.forget()
        output = "".join(assistant.engine.stream(prompt, sampling))
        return ("正面" if "正面" in output else "负面"), 1.0

    return predict


def full_pass_method(assistant, role: str | None = None) -> Predict:
    """Our verdict with early exit off: the head on the states of a full forward pass."""
    chosen = assistant.roles.get(_label_role(assistant, role))
    head = assistant.head_for(chosen)
    if head is None:  # no head: the label logits need every layer anyway
        return lambda text: _verdict(assistant.classify(text, chosen.name))

    from app.roles.assistant import head_verdict

    def predict(text: str) -> tuple[str, float]:
        prompt = assistant.prompt_for(chosen, text)
        _, states = assistant.engine.choose(prompt, chosen.labels, layers=head.layers)
        return _verdict(head_verdict(chosen, head, states))

    return predict


def run(
    examples: Sequence[Example],
    predictors: dict[str, Predict],
    progress: Callable[[int], None] | None = None,
) -> list[MethodResult]:
    """Every method on every example, interleaved; the first call of each is a warm-up."""
    for predict in predictors.values():
        predict(examples[0].text)
    results = {name: MethodResult(name) for name in predictors}
    for example in examples:
        for name, predict in predictors.items():
            started = time.perf_counter()
            label, confidence = predict(example.text)
            results[name].latencies_ms.append((time.perf_counter() - started) * 1000)
            results[name].predictions.append(label)
            results[name].confidences.append(confidence)
        if progress:
            progress(1)
    return list(results.values())


def probe(
    name: str, settings: dict[str, object], train: Path, role: str | None = None
) -> tuple[float, float]:
    """Cold start (s, fresh process to first answer) and peak RSS (MB) of one method."""
    command = [
        sys.executable,
        "-m",
        "app.measure.evaluation",
        name,
        json.dumps(settings, default=str),
        str(train),
        role or "",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise InputError(f"Probe of {name} failed: {result.stderr.strip().splitlines()[-1:]}")
    return elapsed, json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _probe_main(name: str, settings_json: str, train: str, role: str = "") -> None:
    """Child process: load one method, answer once, report peak RSS."""
    assistant = None
    if name in LLM_METHODS:
        from app.roles.assistant import Assistant

        assistant = Assistant.load(**json.loads(settings_json))
    predict = build_method(name, assistant=assistant, train=Path(train), role=role or None)
    predict("这家酒店的服务非常好。")
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: on Linux ru_maxrss survives
    fork + exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KB


if __name__ == "__main__":
    _probe_main(*sys.argv[1:4])
