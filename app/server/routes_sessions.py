"""Kept conversations over HTTP: list, open, rename and delete what the store holds.

This server's own extension, not OpenAI's API (OpenAI's Conversations API has other shapes):
the chat page's sidebar reads these, and they show every conversation of the store, whoever
wrote it (the page, `allinone chat --session NAME`, a Responses API chain): one store, one view.

    GET    /v1/sessions         the conversations, newest first
    GET    /v1/sessions/{key}   one conversation (by id or name) and its turns, oldest first
    PATCH  /v1/sessions/{key}   {"name": "..."}: rename it (names are unique)
    DELETE /v1/sessions/{key}   delete it and its turns

A turn to keep is sent to POST /v1/respond with `session` (app/server/routes_native.py).
Errors leave in OpenAI's error shape (app/server/errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from app.errors import InputError
from app.roles.conversations import items_text
from app.roles.store import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    NameTaken,
    StoredTurn,
)
from app.server.state import loaded_store

router = APIRouter()
MAX_NAME = 100  # characters: a name is a label in a sidebar, not a text


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def not_found(key: str) -> HTTPException:
    """The 404 for a conversation that is not there, saying where to look."""
    return HTTPException(404, f"No conversation {key!r}; GET /v1/sessions lists them.")


def known_conversation(store: ConversationStore, key: str) -> Conversation:
    """The conversation with the id or name `key`; a 404 if there is none."""
    found = store.conversation(key)
    if found is None:
        raise not_found(key)
    return found


# Plain `def` routes: FastAPI runs them in its thread pool, so SQLite never blocks the loop.
@router.get("/v1/sessions")
def list_sessions(request: Request) -> dict[str, Any]:
    store = loaded_store(request)
    return {"object": "list", "data": [conversation_json(c) for c in store.conversations()]}


@router.get("/v1/sessions/{key}")
def show_session(key: str, request: Request) -> dict[str, Any]:
    store = loaded_store(request)
    conversation = known_conversation(store, key)
    try:
        turns = store.turns(conversation.id)
    except ConversationNotFound:  # deleted meanwhile by another client
        raise not_found(key) from None
    return {**conversation_json(conversation), "turns": [turn_json(t) for t in turns]}


@router.patch("/v1/sessions/{key}")
def rename_session(key: str, body: RenameRequest, request: Request) -> dict[str, Any]:
    store = loaded_store(request)
    conversation = known_conversation(store, key)
    name = body.name.strip()
    if not name:
        raise InputError("name: give the conversation a name that is not empty.")
    if len(name) > MAX_NAME:
        raise InputError(f"name: at most {MAX_NAME} characters.")
    try:
        return conversation_json(store.rename(conversation.id, name))
    except NameTaken as error:
        raise HTTPException(409, f"name: {error}") from None
    except ConversationNotFound:  # deleted meanwhile by another client
        raise not_found(key) from None


@router.delete("/v1/sessions/{key}")
def delete_session(key: str, request: Request) -> dict[str, Any]:
    store = loaded_store(request)
    conversation = known_conversation(store, key)
    if not store.delete_conversation(conversation.id):  # deleted meanwhile by another client
        raise not_found(key)
    return {"id": conversation.id, "object": "conversation.deleted", "deleted": True}


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "conversation",
        "name": conversation.name,
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "turn_count": conversation.turn_count,
    }


def turn_json(turn: StoredTurn) -> dict[str, Any]:
    """A turn as the page shows it: what the user said, the reply, the mood verdict, status."""
    verdict = turn.verdict
    if verdict is not None:
        verdict = {"label": verdict["label"], "confidence": round(verdict["confidence"], 4)}
    return {
        "id": turn.id,
        "created_at": turn.created_at,
        "status": turn.status,
        "user": items_text(turn.input_items, "user"),
        "reply": items_text(turn.output_items, "assistant"),
        "verdict": verdict,
    }
