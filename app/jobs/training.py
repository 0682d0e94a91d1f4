"""Train a role's learned head for whatever model is loaded, on the user's own machine.

Why: a head reads one model's hidden states (app/roles/head.py), so the heads shipped for the mirror
model do not fit another GGUF, and the role falls back to the label logits (dev 80.7% instead
of 86%). The training rows ship inside the package (reviews_train.csv, gzipped), so an
installed user can run `allinone train-head --role sentiment` and get the full accuracy back.

How: a class-balanced sample of rows goes through the role's prompt on the list path; the
pooled states of the head's layers are saved in chunks of CHUNK rows under the cache folder,
so Ctrl-C and the same command again resumes where it stopped. A standardised logistic
regression is fit (app/roles/head.py; C by 5-fold cross-validation on those rows) and written to
the per-user data folder, keyed by model and role, never into site-packages; the roles layer
finds it there again (app/roles/user_heads.py).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.atomic import atomic_open, write_text_atomic
from app.config import bundled_file
from app.errors import InputError
from app.roles.head import Head, fit
from app.roles.prompts import Role, RoleBook
from app.roles.user_heads import TRAIN_LABELS, user_head_path, with_user_heads

# Named here for the CLI, which lists the heads to train (heads_missing) with this command.
from app.roles.user_heads import train_command as train_command

CHUNK = 256  # rows a chunk file holds: the most an interrupt loses
TRAIN_ROWS = bundled_file("reviews_train.csv.gz", "data/reviews_train.csv.gz")


def heads_missing(roles: RoleBook, model_name: str) -> list[str]:
    """Roles meant to decide with a head that have none for `model_name` (shipped or trained
    here) and that `train-head` can train: they fall back to the label logits. (A role with
    other labels than the bundled rows', such as the reply judge, is trained from its own
    data: scripts/train_reply_judge.py.)"""
    heads = with_user_heads(roles, model_name).heads
    return [
        name
        for name, role in roles.roles.items()
        if role.head
        and set(role.labels) <= set(TRAIN_LABELS)
        and (name not in heads or heads[name].model != model_name)
    ]


def read_labelled_rows(path: Path) -> tuple[list[str], list[str]]:
    """text,label rows of a CSV file, gzipped or not."""
    if not path.is_file():
        raise InputError(f"Training file not found: {path} (give one with --train).")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
    if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
        raise InputError(f"{path}: expected a CSV with 'text' and 'label' columns.")
    rows = [row for row in reader if (row.get("text") or "").strip()]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def balanced_sample(
    texts: Sequence[str], labels: Sequence[str], wanted: Sequence[str], rows: int, seed: int
) -> list[tuple[str, str]]:
    """`rows` rows, the same number of each label, drawn with `seed` (the same rows each run)."""
    rng = random.Random(seed)
    by_label = {
        label: [t for t, lab in zip(texts, labels, strict=True) if lab == label] for label in wanted
    }
    per_label = rows // len(wanted)
    short = [label for label in wanted if len(by_label[label]) < per_label]
    if short or per_label < 5:
        have = ", ".join(f"{len(by_label[label])} of {label}" for label in wanted)
        raise InputError(
            f"--rows {rows} needs {max(per_label, 5)} rows of each label; the training file "
            f"has {have}. Ask for a number of rows it can balance."
        )
    picked = [(text, label) for label in wanted for text in rng.sample(by_label[label], per_label)]
    rng.shuffle(picked)
    return picked


def extract(
    assistant,
    role: Role,
    texts: Sequence[str],
    layers: Sequence[int],
    work_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    with_logits: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per text: the layers' pooled states, and with `with_logits` P(labels[0]) from the label
    logits alone (else None).

    Chunk files already in `work_dir` (from an interrupted run with the same rows, layers,
    prompt and model) are read, not recomputed. Through the list path, whose results equal the
    one-text path (tests/test_streams.py) and which is ~20% faster here; without logits each
    pass also stops after the deepest layer (app/llm/hidden.py: 1.3x faster again).
    """
    engine = assistant.engine
    work_dir.mkdir(parents=True, exist_ok=True)
    states, first = [], []
    for start in range(0, len(texts), CHUNK):
        path = work_dir / f"chunk-{start // CHUNK:05d}.npz"
        batch = texts[start : start + CHUNK]
        saved = dict(np.load(path)) if path.is_file() else {}
        if len(saved.get("x", ())) != len(batch):  # a shorter run's last chunk: redo it
            saved = {}
        if "x" not in saved or (with_logits and "p" not in saved):
            prompts = [assistant.prompt_for(role, text) for text in batch]
            if with_logits:
                results = engine.choose_many(prompts, role.labels, layers=layers)
                saved["x"] = np.stack([pooled for _, pooled in results]).astype(np.float32)
                saved["p"] = np.asarray([probabilities[0] for probabilities, _ in results])
            else:
                pooled = engine.read_states_many(prompts, layers)
                saved["x"] = np.stack(pooled).astype(np.float32)
            with atomic_open(path, "wb") as out:  # a chunk is there whole or not at all
                np.savez(out, **saved)
        states.append(saved["x"])
        first.append(saved.get("p"))
        if progress:
            progress(min(start + CHUNK, len(texts)), len(texts))
    logits = np.concatenate(first) if with_logits else None
    return np.concatenate(states), logits


def train_head(
    assistant,
    role_name: str,
    *,
    rows: int = 2000,
    layers: Sequence[int] | None = None,
    hidden: int = 0,
    seed: int = 13,
    train: Path | None = None,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    report: Callable[[str], None] = print,
) -> tuple[Path, Head]:
    """Train `role_name`'s head for the loaded model; returns where it was written and it."""
    role = assistant.roles.get(role_name)
    if len(role.labels) != 2:
        raise InputError(
            f"Role {role.name!r} has {len(role.labels)} labels; a head needs exactly two."
        )
    engine = assistant.engine
    from app.roles.head import default_layers

    chosen = tuple(layers) if layers else default_layers(engine.n_layer)
    outside = [layer for layer in chosen if layer not in engine.middle_layers]
    if outside:
        raise InputError(
            f"--layers must lie within 0-{engine.middle_layers[-1]}: this model has "
            f"{engine.n_layer} layers."
        )
    texts, labels = read_labelled_rows(train or TRAIN_ROWS)
    picked = balanced_sample(texts, labels, role.labels, rows, seed)
    key = "-".join(
        [user_head_path(engine.model_name, role.name).parent.name, role.name, role.fingerprint()]
        + [str(rows), str(seed), f"{chosen[0]}_{chosen[-1]}", str(len(texts))]
    )
    work_dir = assistant.settings.cache_dir / "train-head" / key
    states, _ = extract(assistant, role, [t for t, _ in picked], chosen, work_dir, progress)
    targets = [1 if label == role.labels[0] else 0 for _, label in picked]
    try:
        head = fit(
            states, targets, role.labels, chosen, engine.model_name, role.fingerprint(),
            hidden=hidden, report=report,
        )  # fmt: skip
    except ImportError:
        raise InputError(
            'Fitting a head needs scikit-learn: pip install "allinone[train]"'
        ) from None
    target = out or user_head_path(engine.model_name, role.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, head.to_json())
    return target, head
