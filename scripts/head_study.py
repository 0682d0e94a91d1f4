#!/usr/bin/env python3
"""How deep must a head read, and which head features pay? Two tables and a chart.

    python scripts/head_study.py [--rows 4096] [--seed 13] [--out reports/head-study]

1. The depth curve. Early exit stops the forward pass after the head's deepest layer
   (app/llm/hidden.py), so a head on shallower layers answers sooner. For each deepest layer D in
   10..18, a head on the five layers D-4..D is fit on the training rows and scored on dev, and
   the list path (`read_states_many`, stopped after D) is timed on 120 dev texts, each depth
   once in each direction: accuracy against texts/s, with the full pass (every layer, the
   label logits) timed beside it.
2. Accuracy ideas on band 14-18 (the head shipped before), each fit on the training rows
   only and scored on dev and on tests/data/conversational.csv: averaging the layers (shipped)
   or concatenating them; pooling by the last token, the mean, or both (shipped); and dropping
   training rows whose cross-validated prediction confidently contradicts their label (label
   noise: many rows are fragments that carry their whole review's label).

Features of layers 6-18 for every text come from ONE stopped pass per text and are kept in
chunks under the cache folder (`training.extract`), so a rerun only refits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app.jobs.training import TRAIN_ROWS, balanced_sample, extract, read_labelled_rows  # noqa: E402
from app.measure.evaluation import DEFAULT_DEV, load_labelled  # noqa: E402
from app.roles.assistant import Assistant  # noqa: E402

LAYERS = tuple(range(6, 19))  # every layer any head below reads
DEPTHS = tuple(range(10, 19))
BAND = 5  # layers per head: D-4..D, like the shipped 13-17
TIMED_TEXTS = 120  # dev texts the list path is timed on, per depth and direction
CONVERSATIONAL = ROOT / "tests" / "data" / "conversational.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=4096, help="training rows (default: 4096)")
    parser.add_argument(
        "--sample",
        type=int,
        default=8000,
        help="the balanced sample --rows are the first of; a larger --rows later reuses the "
        "features already kept (default: 8000)",
    )
    parser.add_argument("--seed", type=int, default=13, help="row sampling seed (default: 13)")
    parser.add_argument(
        "--dev", type=Path, default=DEFAULT_DEV, help="labelled dev file (default: %(default)s)"
    )
    parser.add_argument("--role", default="sentiment", help="label role (default: sentiment)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "reports" / "head-study", help="(default: %(default)s)"
    )
    parser.add_argument(
        "--rest",
        action="store_true",
        help="train on every bundled row: the --rows of the sample, then each row outside it "
        "(15,412 rows in all; features kept like the sample's) (default: off)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        default=0,
        help="heads written by --save get one hidden layer of this many ReLU units; 0: a "
        "logistic regression (default: 0; the shipped sentiment head: --rest --hidden 256)",
    )
    parser.add_argument(
        "--extract-only", action="store_true", help="compute and keep the features, then stop"
    )
    parser.add_argument(
        "--save",
        metavar="DEPTH:PATH",
        action="append",
        default=[],
        help="write the head on layers DEPTH-4..DEPTH (fit on --rows) to PATH, e.g. "
        "18:heads/x.json; repeat for several (default: none)",
    )
    args = parser.parse_args()

    assistant = Assistant.load(heads=False)
    role = assistant.roles.get(args.role)
    data = features(assistant, role, args)
    for spec in args.save:
        save_head(assistant, role, data, spec, args.hidden)
    if args.extract_only or args.save:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    curve = depth_curve(assistant, role, data)
    ideas = accuracy_ideas(data)
    report(args.out, curve, ideas, args)


def features(assistant, role, args) -> dict[str, np.ndarray]:
    """States of LAYERS (n, layers, 2 * n_embd) and 0/1 targets for train, dev, conversational."""
    work = assistant.settings.cache_dir / "head-study"
    texts, labels = read_labelled_rows(TRAIN_ROWS)
    picked = balanced_sample(texts, labels, role.labels, args.sample, args.seed)
    sets = {"train": ([t for t, _ in picked], [label for _, label in picked])}
    if args.rest:
        seen = {text for text, _ in picked}
        outside = [(t, label) for t, label in zip(texts, labels, strict=True) if t not in seen]
        sets["rest"] = ([t for t, _ in outside], [label for _, label in outside])
    for name, path in (("dev", args.dev), ("conv", CONVERSATIONAL)):
        examples = load_labelled(path)
        sets[name] = ([e.text for e in examples], [e.label for e in examples])
    data: dict[str, np.ndarray] = {}
    for name, (rows, row_labels) in sets.items():
        digest = hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:12]
        key = f"{role.name}-{role.fingerprint()}-{LAYERS[0]}_{LAYERS[-1]}-{digest}"
        if name == "train":
            rows, row_labels = rows[: args.rows], row_labels[: args.rows]
        bar = tqdm(total=len(rows), desc=f"features: {name}", unit="text")

        def progress(done: int, _total: int, bar=bar) -> None:
            bar.update(done - bar.n)

        data[name], _ = extract(assistant, role, rows, LAYERS, work / key, progress)
        bar.close()
        data[name + "_y"] = np.asarray(
            [1 if label == role.labels[0] else 0 for label in row_labels]
        )
    if args.rest:  # the rows outside the sample join the training rows
        data["train"] = np.concatenate([data["train"], data.pop("rest")])
        data["train_y"] = np.concatenate([data["train_y"], data.pop("rest_y")])
    return data


def save_head(assistant, role, data, spec: str, hidden: int = 0) -> None:
    """Fit the head of one depth as `allinone train-head` does and write it (a shipped head)."""
    from app.roles.head import fit

    depth, _, path = spec.partition(":")
    indices = band(int(depth))
    head = fit(
        data["train"][:, indices],
        data["train_y"],
        role.labels,
        [LAYERS[i] for i in indices],
        assistant.engine.model_name,
        role.fingerprint(),
        hidden=hidden,
    )
    Path(path).write_text(head.to_json(), encoding="utf-8")
    scores = []
    for name in ("dev", "conv"):
        said = np.asarray([head.probability(row) >= 0.5 for row in data[name][:, indices]])
        scores.append(f"{name} {(said == data[name + '_y']).mean():.1%}")
    print(f"wrote {path}: layers {LAYERS[indices[0]]}-{LAYERS[indices[-1]]}, {head.note}")
    print("accuracy: " + ", ".join(scores))


def band(depth: int) -> list[int]:
    """Indices into LAYERS of the head's layers D-4..D."""
    return [LAYERS.index(layer) for layer in range(depth - BAND + 1, depth + 1)]


def fit_and_score(train_x, train_y, tests: dict[str, tuple[np.ndarray, np.ndarray]]):
    """A standardised logistic regression, C by 5-fold CV on train (as app/roles/head.py fits)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    z = (train_x - mean) / scale
    scores = {
        c: cross_val_score(LogisticRegression(C=c, max_iter=3000), z, train_y).mean()
        for c in (0.001, 0.003, 0.01, 0.03)
    }
    best = max(scores, key=scores.__getitem__)
    model = LogisticRegression(C=best, max_iter=3000).fit(z, train_y)
    out = {"C": best, "cv": float(scores[best])}
    for name, (x, y) in tests.items():
        out[name] = float((model.predict((x - mean) / scale) == y).mean())
    return out


def averaged(states: np.ndarray, indices: list[int]) -> np.ndarray:
    return states[:, indices].astype(np.float64).mean(axis=1)


def depth_curve(assistant, role, data) -> list[dict]:
    """Per deepest layer: dev accuracy of a head on D-4..D, and list-path texts/s stopped at D."""
    dev_texts = [e.text for e in load_labelled(DEFAULT_DEV)][:TIMED_TEXTS]
    prompts = [assistant.prompt_for(role, text) for text in dev_texts]
    engine = assistant.engine
    engine.read_states_many(prompts[:20], LAYERS[-1:])  # warm-up: the streams' prefix
    seconds: dict[object, list[float]] = {}
    for order in (DEPTHS, DEPTHS[::-1]):  # both ways, so a drift hits every depth alike
        started = time.perf_counter()
        engine.choose_many(prompts, role.labels)
        seconds.setdefault("full", []).append(time.perf_counter() - started)
        for depth in tqdm(order, desc="timing depths"):
            started = time.perf_counter()
            engine.read_states_many(prompts, [LAYERS[i] for i in band(depth)])
            seconds.setdefault(depth, []).append(time.perf_counter() - started)
    full_rate = len(prompts) / statistics.median(seconds["full"])
    rows = []
    for depth in tqdm(DEPTHS, desc="fitting depths"):
        scores = fit_and_score(
            averaged(data["train"], band(depth)),
            data["train_y"],
            {
                "dev": (averaged(data["dev"], band(depth)), data["dev_y"]),
                "conv": (averaged(data["conv"], band(depth)), data["conv_y"]),
            },
        )
        rate = len(prompts) / statistics.median(seconds[depth])
        rows.append({"depth": depth, **scores, "texts_per_s": rate, "vs_full": rate / full_rate})
    rows.append({"depth": "full pass", "texts_per_s": full_rate, "vs_full": 1.0})
    return rows


def accuracy_ideas(data) -> list[dict]:
    """Head features and training rows on band 14-18 (shipped before), dev and conversational."""
    indices = band(18)
    n_embd = data["train"].shape[-1] // 2
    last, mean = slice(0, n_embd), slice(n_embd, 2 * n_embd)

    def view(states, how: str) -> np.ndarray:
        chosen = states[:, indices].astype(np.float64)
        if how == "concatenated":
            return chosen.reshape(len(states), -1)
        pooled = chosen.mean(axis=1)
        return {"last": pooled[:, last], "mean": pooled[:, mean]}.get(how, pooled)

    def tests(how: str) -> dict:
        return {
            "dev": (view(data["dev"], how), data["dev_y"]),
            "conv": (view(data["conv"], how), data["conv_y"]),
        }

    rows = []
    for how, name in (
        ("both", "layers averaged, last token + mean (shipped)"),
        ("concatenated", "layers concatenated, last token + mean"),
        ("last", "layers averaged, last token only"),
        ("mean", "layers averaged, mean only"),
    ):
        scores = fit_and_score(view(data["train"], how), data["train_y"], tests(how))
        rows.append({"idea": name, "rows": len(data["train_y"]), **scores})
    kept = clean_rows(view(data["train"], "both"), data["train_y"])
    for how in ("both", "concatenated"):
        scores = fit_and_score(view(data["train"], how)[kept], data["train_y"][kept], tests(how))
        name = "averaged" if how == "both" else "concatenated"
        rows.append(
            {"idea": f"label-noise rows dropped, {name}", "rows": int(kept.sum()), **scores}
        )
    return rows


def clean_rows(x: np.ndarray, y: np.ndarray, confident: float = 0.9) -> np.ndarray:
    """Rows to keep: all but those whose 5-fold cross-validated prediction gives their own
    label less than 1 - `confident` (the model is sure the label is wrong)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    p = cross_val_predict(LogisticRegression(C=0.003, max_iter=3000), z, y, method="predict_proba")[
        :, 1
    ]
    own = np.where(y == 1, p, 1 - p)
    return own >= 1 - confident


def report(out: Path, curve: list[dict], ideas: list[dict], args) -> None:
    lines = [
        f"# Head study ({args.rows} training rows, seed {args.seed}; dev {args.dev.name})",
        "",
        "## Depth curve: head on layers D-4..D, the pass stopped after D",
        "",
        "| deepest layer | dev accuracy | conversational | CV (train) | texts/s (list) | vs full |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in curve:
        if row["depth"] == "full pass":
            lines.append(f"| full pass (label logits) | | | | {row['texts_per_s']:.1f} | 1.00x |")
            continue
        lines.append(
            f"| {row['depth']} | {row['dev']:.1%} | {row['conv']:.1%} | {row['cv']:.3f} | "
            f"{row['texts_per_s']:.1f} | {row['vs_full']:.2f}x |"
        )
    lines += [
        "",
        "## Accuracy ideas (band 14-18)",
        "",
        "| idea | training rows | dev accuracy | conversational | CV (train) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in ideas:
        lines.append(
            f"| {row['idea']} | {row['rows']} | {row['dev']:.1%} | {row['conv']:.1%} | "
            f"{row['cv']:.3f} |"
        )
    chart = plot(curve, out / "depth-curve.png")
    if chart:
        lines += ["", f"![depth curve]({chart.name})"]
    (out / "head-study.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "head-study.json").write_text(
        json.dumps({"curve": curve, "ideas": ideas}, indent=1), encoding="utf-8"
    )
    print("\n".join(lines))
    print(f"\nwritten: {out / 'head-study.md'}")


def plot(curve: list[dict], path: Path) -> Path | None:
    from app.measure.report import pyplot, save

    plt = pyplot()
    if plt is None:
        return None
    rows = [row for row in curve if row["depth"] != "full pass"]
    figure, left = plt.subplots(figsize=(7, 3.6))
    depths = [row["depth"] for row in rows]
    left.plot(depths, [100 * row["dev"] for row in rows], "o-", color="tab:blue", label="dev")
    left.set_xlabel("deepest layer the head reads (the pass stops there)")
    left.set_ylabel("dev accuracy, %", color="tab:blue")
    right = left.twinx()
    right.plot(depths, [row["vs_full"] for row in rows], "s--", color="tab:orange")
    right.set_ylabel("list speed vs full pass", color="tab:orange")
    left.set_title("Early exit: accuracy against speed")
    return save(figure, path)


if __name__ == "__main__":
    main()
