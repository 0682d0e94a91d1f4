"""Replies to a client that may leave: pieces pulled for a stream, and watched whole replies.

Why: the model's calls block, so they run in the thread pool; and a reply nobody reads any more
must be closed at once, which frees its slot in the engine for the next client. Streams check
for a gone client after every piece; a non-streamed reply is watched while it is generated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.llm import Completion
from app.server.request_log import request_id_of

log = logging.getLogger("allinone.server")
DISCONNECT_POLL = 0.25  # seconds between checks for a gone client while a reply is generated
T = TypeVar("T")


async def unless_gone(request: Request, completions: list[Completion], work: Callable[[], T]) -> T:
    """Run `work` (which generates the completions to their end) in a thread, watching the
    client meanwhile: if it leaves, close them, so the model stops generating for nobody."""
    task = asyncio.ensure_future(run_in_threadpool(work))
    while not task.done():
        await asyncio.wait({task}, timeout=DISCONNECT_POLL)
        if not task.done() and await request.is_disconnected():
            for completion in completions:
                completion.close()  # thread-safe: generation stops before its next token
            log.info(
                "%s client gone before the reply ended; generation stopped", request_id_of(request)
            )
            break
    return await task


async def pieces(request: Request, stream: Iterator[str]) -> AsyncIterator[str]:
    """Pull pieces from the blocking stream in a thread; stop at once if the client has left.

    The stream is closed in `finally` on every exit (done, client gone, task cancelled), which
    releases the model's lock right away. Closing it synchronously is safe: a cancelled
    `run_in_threadpool` still waits for its worker thread, so no thread is inside the generator.
    """
    sentinel = object()
    sent = 0
    gone = False
    try:
        while True:
            piece = await run_in_threadpool(next, stream, sentinel)
            if piece is sentinel:
                return
            if await request.is_disconnected():
                gone = True
                return
            sent += 1
            yield piece  # type: ignore[misc]
    except BaseException:
        gone = True  # cancelled: sse-starlette saw the client disconnect
        raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if gone:
            log.info("%s client gone after %d pieces; stream closed", request_id_of(request), sent)
