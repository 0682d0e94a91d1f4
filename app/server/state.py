"""What the routes share: the one Assistant, held in `app.state` once loaded, and batch limits.

Why here and not in module globals: each app built by `create_app` (the server, each test) holds
its own Assistant, and a route reaches it through the request it serves.
"""

from __future__ import annotations

from fastapi import Request

from app.errors import InputError
from app.roles.assistant import Assistant
from app.roles.store import ConversationStore, open_store

MAX_BATCH = 256  # texts per request, for sentiment and embeddings


def loaded_assistant(request: Request) -> Assistant:
    """The app's Assistant; a 400 asking to retry while the model still loads."""
    current = request.app.state.assistant
    if current is None:
        raise InputError("The model is still loading; retry in a moment (see GET /health).")
    return current


def loaded_store(request: Request) -> ConversationStore:
    """The app's conversation store, opened once (at `settings.store`, pruned by
    `settings.keep_days`) on first use."""
    store = request.app.state.store
    if store is None:
        store = request.app.state.store = open_store(loaded_assistant(request).settings)
    return store
