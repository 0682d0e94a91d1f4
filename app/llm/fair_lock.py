"""A lock granted in arrival order: labels are served between two reply steps."""

from __future__ import annotations

import threading


class FairLock:
    """A lock granted in the order it was asked for.

    Why: the scheduler's thread releases the engine's lock after a step and asks again at once;
    a plain `threading.Lock` usually goes straight back to it, and a label request could then
    wait for the whole reply. Here anyone already waiting goes before the next step.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()  # tickets whose waiter gave up (an exception)

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while ticket != self._serving:
                    self._cond.wait()
            except BaseException:
                if ticket == self._serving:
                    self._advance()
                else:
                    self._abandoned.add(ticket)
                raise

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._advance()

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()
