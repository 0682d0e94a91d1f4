"""Every llama_decode of the process runs on ONE thread.

Why: llama.cpp's CPU kernels, as llama-cpp-python builds them, sync their threads with an OpenMP
barrier after each operation of a decode (hundreds a token), and OpenMP gives every thread that
starts a decode worker threads of its own. A label served by one thread beside the scheduler's
worker makes two such teams: more OpenMP threads than the 2 cores, and libgomp then stops
spinning at those barriers and sleeps in the kernel at each one. Measured on 2 cores: a
one-reply step took 35-38 ms instead of 21-23 once a label had been read from another thread.
(Setting OMP_WAIT_POLICY=active instead brought the speed back but kept a core busy at rest.)
llama.cpp's own server and tools decode from one thread; so does this process now. The engine's
lock still decides who goes next; this thread only does the call, and the caller waits for it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Job:
    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class DecodeThread:
    """A daemon thread that runs the functions given to `run`, one at a time, in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the decoding thread; its result or its exception, here.

        The caller waits for the call to end even if interrupted meanwhile (Ctrl-C): the
        context and batch it decodes must not be touched by anyone else before then.
        """
        if threading.current_thread() is self._thread:  # a call from inside a decode
            return function(*args)
        job = _Job(function, args)
        self._ensure_started()
        self._jobs.put(job)
        try:
            job.done.wait()
        except BaseException:
            while not job.done.wait(0.1):
                pass
            raise
        if job.error is not None:
            raise job.error
        return job.result

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="decode", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.function(*job.args)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                job.error = error
            finally:
                job.done.set()


_DECODER = DecodeThread()


def on_decode_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a call that decodes (llama_decode, `Llama.eval`) on the process's decoding thread."""
    return _DECODER.run(function, *args)
