"""Settings: one typed object that the Python API, the CLI and the server all share.

Precedence is defaults < environment (`ALLINONE_*`) < explicit arguments (CLI flags or keyword
arguments). Every field carries a description, and the CLI builds its flags from these fields, so a
new option is one field here rather than three edits in three shells.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import AllInOneError

# The source checkout (where pyproject.toml sits next to app/), or None for an installed wheel.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
IN_SOURCE_TREE = (SOURCE_ROOT / "pyproject.toml").is_file()


def bundled_file(name: str, source_relpath: str) -> Path:
    """Where a shipped data file lives: in the checkout, or inside the installed package."""
    if IN_SOURCE_TREE:
        return SOURCE_ROOT / source_relpath
    return Path(str(resources.files("app") / "_data" / name))


def default_models_dir() -> Path:
    """`models/` of the checkout; for an installed wheel, a per-user cache folder."""
    if IN_SOURCE_TREE:
        return SOURCE_ROOT / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "allinone" / "models"


def default_cache_dir() -> Path:
    """Per-user cache for what is computed once per model (the example bank, train-head)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "allinone"


def default_store_path() -> Path:
    """Where conversations are kept: $XDG_DATA_HOME/allinone/conversations.sqlite3
    (~/.local/share/...), next to the heads trained on this machine."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "allinone" / "conversations.sqlite3"


def default_threads() -> int:
    """llama.cpp is fastest with one thread per physical core; 4 is plenty for a 0.5B model."""
    return max(1, min(4, os.cpu_count() or 1))


class Settings(BaseSettings):
    """Everything that changes how the one model is loaded and prompted."""

    model_config = SettingsConfigDict(env_prefix="ALLINONE_", extra="forbid")

    model: str | None = Field(
        default=None,
        description="GGUF file path or catalog name (see `allinone download --list`). "
        "Default: the default catalogued model if downloaded, else any catalogued model "
        "found in the models folder.",
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Folder that holds downloaded GGUF files.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Folder for what is computed once per model and kept (the example bank's "
        "vectors and group prefixes, train-head's features); safe to delete.",
    )
    prompts: Path = Field(
        default_factory=lambda: bundled_file("prompts.yaml", "prompts.yaml"),
        description="The roles file (system prompts, labels, generation settings).",
    )
    n_ctx: int = Field(
        default=2048,
        ge=256,
        le=32768,
        description="Context window in tokens (`serve` uses 8192 unless given: room for a "
        "client's tools block and a conversation).",
    )
    n_threads: int = Field(
        default_factory=default_threads, ge=1, le=256, description="CPU threads for llama.cpp."
    )
    n_batch: int = Field(
        default=512, ge=8, le=8192, description="Tokens evaluated per llama.cpp batch."
    )
    extra_buffers: bool = Field(
        default=False,
        description="Let llama.cpp repack weights into CPU-specific buffers (AMX, interleaved "
        "layouts): faster generation on some CPUs, but its AMX kernels crash some virtual "
        "machines, so off unless asked for.",
    )
    parallel: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Chat replies generated together, one token each per llama.cpp call "
        "(continuous batching). Each slot keeps its own KV of 2048 tokens (or --ctx if "
        "smaller), ~24 MB for the 0.5B models; a longer request is answered alone. 1: one reply "
        "at a time, no extra memory.",
    )
    seed: int | None = Field(
        default=None, ge=0, description="Random seed for chat replies (unset: a new one each time)."
    )
    verbose: bool = Field(
        default=False,
        description="Show llama.cpp's own log lines on stderr (loading, warnings). Off, they "
        "are hidden, and a model llama.cpp refuses is still one error line that says why.",
    )
    store: Path | None = Field(
        default_factory=default_store_path,
        description="The SQLite file where conversations are kept (`chat --session`, "
        "`sessions`, the server's Responses API and chat page).",
    )
    keep_days: float | None = Field(
        default=None,
        ge=0,
        description="Delete conversations untouched for longer than this many days, each time "
        "the store is opened. Unset: keep every conversation.",
    )


def load_settings(**overrides: object) -> Settings:
    """Build settings from env + overrides (None overrides are ignored, so flags can default)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors()
        )
        raise AllInOneError(
            f"Invalid setting ({problems}). Check your flags and ALLINONE_* environment variables."
        ) from None
