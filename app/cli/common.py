"""What every command of the CLI shares: its model flags, loading the Assistant, and how errors
leave.

Model flags are generated from the Settings fields, so every flag shows its description, default
and environment variable, and a new setting needs no edit here. Errors the user can fix arrive as
AllInOneError and leave as one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app.cli.progress import bar_when_moving
from app.config import Settings
from app.errors import AllInOneError

if TYPE_CHECKING:
    from app.roles.assistant import Assistant

# Settings field -> flag name, for the flags whose field name is not the best flag.
_FLAG_NAMES = {
    "n_ctx": "ctx",
    "n_threads": "threads",
    "n_batch": "batch",
    "models_dir": "models-dir",
}


_PATH_FIELDS = {"models_dir", "prompts", "cache_dir", "store"}


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one --flag per Settings field (help = its description, default and env var)."""
    for name in reversed(Settings.model_fields):
        command = _setting_option(name)(command)
    return command


def _setting_option(name: str) -> Callable[..., Any]:
    field = Settings.model_fields[name]
    flag = "--" + _FLAG_NAMES.get(name, name.replace("_", "-"))
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    env = f"ALLINONE_{name.upper()}"
    help_text = f"{field.description} [default: {default}; env: {env}]"
    if field.annotation is bool:
        return click.option(flag, name, is_flag=True, default=None, help=help_text)
    kind: Any = click.Path(path_type=Path) if name in _PATH_FIELDS else None
    if field.annotation in (int, int | None):
        kind = int
    elif field.annotation in (float, float | None):
        kind = float
    return click.option(flag, name, default=None, type=kind, help=help_text)


# --verbose alone, for a command that takes no other model setting (`download`).
verbose_option = _setting_option("verbose")


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line + exit code; Ctrl-C into a quiet exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AllInOneError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)

    return wrapper


def load_assistant(settings: dict[str, Any]) -> Assistant:
    """The Assistant for a command's flags. Commands call it as `common.load_assistant`, so that
    a test can hand every command a scripted Assistant by replacing it here, in one place."""
    from app.roles.assistant import Assistant  # here, not at the top: `--help` stays instant

    return Assistant.load(**settings)


def prepare_bank(assistant: Assistant) -> None:
    """Read the chat role's example bank before the first message (once per model: later runs
    load the cached vectors at once), with a bar only while the model reads it. Its groups'
    prompt prefixes come each with its group's first reply."""
    with bar_when_moving(unit="exchange", desc="example bank") as progress:
        assistant.prepare_bank(progress=progress, prefixes=False)
