"""Progress bars of the long commands, set up in one place.

Bars go to stderr, so that stdout stays the command's output, and draw only on a terminal (logs
and CI stay clean). The jobs and the measures know nothing of tqdm: they take a callback, and the
adapters here turn each kind of callback into moves of a bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    unit: str = "it",
    total: int | None = None,
    desc: str | None = None,
    always: bool = False,
) -> tqdm:
    """A tqdm bar on stderr, drawn on a terminal only unless `always`: a bar that does not draw
    counts nothing either, so a caller that reads `bar.n` afterwards needs `always`."""
    from tqdm import tqdm  # here, not at the top: `--help` stays instant

    return tqdm(
        iterable,
        total=total,
        unit=unit,
        desc=desc,
        disable=False if always else None,
        file=sys.stderr,
    )


def follow(bar: tqdm) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback: for the jobs that report where they are, and learn
    their total only once they have started."""

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress


def follow_steps(bar: tqdm) -> Callable[[str, int], None]:
    """A `progress(name, amount)` callback: the bar shows the step under way and counts on."""

    def progress(name: str, amount: int) -> None:
        bar.set_description(name)
        bar.update(amount)

    return progress


@contextmanager
def bar_when_moving(*, unit: str, desc: str) -> Iterator[Callable[[int, int], None]]:
    """A `progress(done, total)` callback whose bar is made at its first call: work that turns
    out to be done already (a cache read) draws nothing, and the line a job logs to explain
    its work, before it starts, comes above the bar instead of under an empty one."""
    bar: tqdm | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(unit=unit, desc=desc, total=total)
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()
