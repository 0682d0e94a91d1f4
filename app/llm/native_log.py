"""llama.cpp's own log, through Python's `logging` instead of straight onto the user's terminal.

Why: llama.cpp (and ggml under it) writes its loading chatter and warnings to stderr, and
llama-cpp-python's own callback reads ggml's log levels with an older numbering, so a harmless
warning ("n_ctx_seq (512) > n_ctx_train (0)") reached every user of `allinone download`. Here
each line goes to the `allinone.llama_cpp` logger at its real level instead, which is silent
unless asked for (`show=True`, the `verbose` setting, `--verbose`), and the error lines are
kept, so a model llama.cpp refuses still gives one line of ours that can say why.

llama.cpp sends a line in pieces (a prefix, then the rest; loading dots; "continue" pieces with
no level of their own): pieces are joined into whole lines before they are logged.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import llama_cpp  # its import installs llama-cpp-python's callback; install() replaces it

LOGGER = logging.getLogger("allinone.llama_cpp")
QUIET = logging.CRITICAL + 1  # above every level: nothing of llama.cpp's passes

# enum ggml_log_level in ggml.h (llama.cpp of llama-cpp-python 0.3.x)
_CONTINUE = 5
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


class _Lines:
    """Pieces in, whole lines out to the logger, each at the level of its first piece."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = ""
        self._level = logging.INFO
        self._collectors: list[list[str]] = []

    def add(self, ggml_level: int, piece: str) -> None:
        with self._lock:
            if ggml_level != _CONTINUE:
                level = _LEVELS.get(ggml_level, logging.INFO)
                if self._pending and level != self._level:
                    self._emit(self._pending)  # a line left open by another kind of message
                    self._pending = ""
                if not self._pending:
                    self._level = level
            *whole, self._pending = (self._pending + piece).split("\n")
            for line in whole:
                self._emit(line)

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        if self._level >= logging.ERROR:
            for collected in self._collectors:
                collected.append(line)
        LOGGER.log(self._level, "%s", line)

    @contextmanager
    def collect(self) -> Iterator[list[str]]:
        collected: list[str] = []
        with self._lock:
            self._collectors.append(collected)
        try:
            yield collected
        finally:
            with self._lock:
                self._collectors.remove(collected)


_LINES = _Lines()


def _receive(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
    with suppress(Exception):  # raised into C, it would only print a traceback
        _LINES.add(level, (text or b"").decode("utf-8", errors="replace"))


# Module level, so it lives as long as llama.cpp may call it (a collected one would crash it).
_CALLBACK = llama_cpp.llama_log_callback(_receive)
_installed = False
_stderr_handler: logging.Handler | None = None


def install(*, show: bool = False) -> None:
    """Route llama.cpp's log to `LOGGER` (once; before a model loads), quiet unless `show` or
    unless the logger's level was already set by the program. `show` prints it on stderr, as
    llama.cpp would, unless a handler of the program's already does."""
    global _installed
    if not _installed:
        llama_cpp.llama_log_set(_CALLBACK, ctypes.c_void_p(0))
        if LOGGER.level == logging.NOTSET:
            LOGGER.setLevel(QUIET)
        _installed = True
    if show:
        LOGGER.setLevel(logging.INFO)
        _ensure_printed()


def _ensure_printed() -> None:
    global _stderr_handler
    if _stderr_handler is None and not logging.getLogger().handlers and not LOGGER.handlers:
        _stderr_handler = logging.StreamHandler(sys.stderr)
        _stderr_handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(_stderr_handler)


@contextmanager
def errors_logged() -> Iterator[list[str]]:
    """The error lines llama.cpp logs while the block runs (whatever the logger's level), to
    say in our own message why it refused something."""
    with _LINES.collect() as collected:
        yield collected
