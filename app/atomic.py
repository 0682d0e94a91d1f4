"""Write a file so that it is either whole or not there: never half written under its name.

Heads, feature chunks, caches, journal blocks, outputs and downloaded models are all read back
by later runs, and a run can be killed at any moment (Ctrl-C, a power cut). So each is written to
a temporary file next to its target (same folder, so same file system) and moved over the target
in one `os.replace` only once the write has finished. A write that fails leaves the old target as
it was and removes its temporary file.

Resumable journals (files.py's `OUT.partial.jsonl`) grow line by line on purpose and are not
written this way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(target: Path, suffix: str = ".partial") -> Iterator[Path]:
    """The temporary path `target` + `suffix` to write by name (for writers that want a path);
    it replaces `target` when the block ends without an error and is removed when it fails."""
    temp = target.with_name(target.name + suffix)
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:  # Ctrl-C too: no temporary file is left behind
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(
    target: Path, mode: str = "w", *, suffix: str = ".partial", fsync: bool = False, **options: Any
) -> Iterator[IO[Any]]:
    """The temporary file opened with `mode` and `options` (as `open` takes them), in place of
    `target` once the block succeeds. `fsync`: on disk before the replace, for files whose
    loss after a power cut would cost a long run (outputs, journal blocks, downloads)."""
    with atomic_path(target, suffix) as temp, temp.open(mode, **options) as file:
        yield file
        if fsync:
            file.flush()
            os.fsync(file.fileno())


def write_text_atomic(
    target: Path, text: str, *, suffix: str = ".partial", fsync: bool = False
) -> None:
    """`text` as `target`'s whole content (UTF-8), all or nothing."""
    with atomic_open(target, "w", suffix=suffix, fsync=fsync, encoding="utf-8") as file:
        file.write(text)
