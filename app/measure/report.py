"""Turn evaluation summaries into what people read: a table, a Markdown report, a PNG chart, JSON.

The table is Markdown, so the same text reads well in a terminal and renders on a web page. The
chart needs matplotlib (the `eval` extra); without it the report says so instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Summary = dict[str, object]


def _fmt(value: object, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return missing
    return format(value, spec)


def table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| method | accuracy | macro-F1 | P/R 正面 | P/R 负面 | ECE | p50 ms | p90 ms | texts/s "
        "| peak RSS MB | cold start s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        pc = s["per_class"]
        pos, neg = pc["正面"], pc["负面"]
        lines.append(
            f"| {s['method']} | {_fmt(s['accuracy'], '.1%')} | {_fmt(s['macro_f1'], '.3f')} | "
            f"{pos['precision']:.2f}/{pos['recall']:.2f} | "
            f"{neg['precision']:.2f}/{neg['recall']:.2f} | "
            f"{_fmt(s['ece'], '.3f')} | {_fmt(s['p50_ms'], '.1f')} | {_fmt(s['p90_ms'], '.1f')} | "
            f"{_fmt(s['texts_per_s'], '.1f')} | {_fmt(s['peak_rss_mb'], '.0f')} | "
            f"{_fmt(s['cold_start_s'], '.1f')} |"
        )
    return "\n".join(lines)


def confusion_tables(summaries: Sequence[Summary]) -> str:
    parts = []
    for s in summaries:
        (pp, pn), (np_, nn) = s["confusion"]
        parts.append(
            f"**{s['method']}** (rows: truth, columns: predicted)\n\n"
            "| | 正面 | 负面 |\n| --- | ---: | ---: |\n"
            f"| 正面 | {pp} | {pn} |\n| 负面 | {np_} | {nn} |\n"
        )
    return "\n".join(parts)


def markdown(title: str, context: str, summaries: Sequence[Summary], chart: Path | None) -> str:
    image = f"![chart]({chart.name})\n\n" if chart else "(chart skipped: install matplotlib)\n\n"
    return (
        f"# {title}\n\n{context}\n\n{table(summaries)}\n\n{image}"
        "ECE = expected calibration error of the reported confidence (lower is better; the "
        "published method reports no probability, so its confidence is always 1).\n\n"
        f"## Confusion matrices\n\n{confusion_tables(summaries)}"
    )


def pyplot() -> Any:
    """matplotlib's pyplot drawing off-screen, or None without the `eval` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return path


def chart(summaries: Sequence[Summary], path: Path, title: str) -> Path | None:
    """Accuracy / macro-F1 bars beside median latency bars; None if matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    names = [str(s["method"]) for s in summaries]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    positions = range(len(names))
    left.bar(
        [p - width / 2 for p in positions],
        [s["accuracy"] for s in summaries],
        width,
        label="accuracy",
    )
    left.bar(
        [p + width / 2 for p in positions],
        [s["macro_f1"] for s in summaries],
        width,
        label="macro-F1",
    )
    left.set_xticks(list(positions), names, rotation=15)
    left.set_ylim(0.5, 1.0)
    left.set_title("Quality (higher is better)")
    left.legend(loc="lower right")
    for p, s in zip(positions, summaries, strict=True):
        left.annotate(
            f"{s['accuracy']:.1%}",
            (p - width / 2, s["accuracy"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.bar(list(positions), [s["p50_ms"] for s in summaries], color="tab:gray")
    right.set_xticks(list(positions), names, rotation=15)
    right.set_yscale("log")
    right.set_title("Median latency per text, ms (log, lower is better)")
    for p, s in zip(positions, summaries, strict=True):
        right.annotate(f"{s['p50_ms']:.1f}", (p, s["p50_ms"]), ha="center", va="bottom", fontsize=8)
    figure.suptitle(title)
    return save(figure, path)


def write(
    out_dir: Path, title: str, context: str, summaries: Sequence[Summary], extra: dict
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = chart(summaries, out_dir / "chart.png", title)
    report = out_dir / "report.md"
    report.write_text(markdown(title, context, summaries, png), encoding="utf-8")
    results = out_dir / "results.json"
    results.write_text(
        json.dumps(
            {"title": title, "context": context, **extra, "methods": list(summaries)},
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    written = {"report": report, "json": results}
    if png:
        written["chart"] = png
    return written
