"""`serve`: the model over HTTP (app.server), started only once the port is free and the model
has loaded, so that either failure is a one-line error rather than a traceback in uvicorn's log."""

from __future__ import annotations

from typing import Any

import click

import app.cli.common as common
from app.errors import InputError

# What real clients send: a tools block (Open WebUI offers 36 tools, ~7,000 tokens) and a
# conversation. Each reply slot stays at 2048 cells (app/llm/scheduler.py); a longer request is
# generated on the engine's own context.
SERVE_CTX = 8192

# On SIGTERM / Ctrl-C in-flight requests may finish within this many seconds (a long reply at
# ~25 tokens/s takes about 10 s); after that they are cut.
SHUTDOWN_GRACE_SECONDS = 30


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback by default: only this machine can connect).",
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@common.settings_options
@common.handle_errors
def serve(host: str, port: int, **settings: Any) -> None:
    """Serve the model over HTTP: OpenAI chat and Responses APIs, sentiment, feel + reply, and a
    chat page that keeps its conversations. --ctx is 8192 here unless given (room for a client's
    tools block)."""
    import logging
    import os

    try:
        import uvicorn

        from app.server.app import create_app, limit_malloc_arenas
    except ImportError:
        raise InputError('The server needs its extra: pip install -e ".[server]"') from None
    _check_port_free(host, port)
    limit_malloc_arenas()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.get("n_ctx") is None and "ALLINONE_N_CTX" not in os.environ:
        settings = {**settings, "n_ctx": SERVE_CTX}
    # load first: a bad model is a one-line error, not a traceback
    assistant = common.load_assistant(settings)
    common.prepare_bank(assistant)  # before the first request, not inside it
    click.echo(
        f"Serving {assistant.engine.model_name} on http://{host}:{port}/ (Ctrl-C stops)", err=True
    )
    uvicorn.run(
        create_app(lambda: assistant),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def _check_port_free(host: str, port: int) -> None:
    """Fail before the model loads, with a hint, rather than after it in uvicorn's log."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise InputError(
            f"Cannot listen on {host}:{port} ({error.strerror}). Pick another --port, "
            "or stop the program that uses it."
        ) from None
