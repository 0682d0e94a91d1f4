"""Stored conversations as the Python API sees them: list, open, continue, rename, delete, export.

Why here: a turn is kept in one place only. `Conversations.say` loads a conversation's history
from the store, answers through the Assistant, and writes the turn: begun (with the mood
verdict) before the first piece is streamed, finished when the stream ends. The CLI's
`chat --session` and the Python API go through it; the server's Responses API writes its own
turns into the same store, so every shell shows every conversation.

    conversations = assistant.conversations()
    said = conversations.say(None, "今天好累。", create_as="work")   # a new conversation
    print(said.verdict, "".join(said.stream))
    said = conversations.say("work", "还是很累。")                   # continues it
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from app.llm import Completion
from app.roles.engine_like import EngineLike
from app.roles.labelling import Verdict
from app.roles.prompting import Turn, require_text
from app.roles.prompts import RoleBook
from app.roles.store import (
    Conversation,
    ConversationNotFound,
    ConversationStore,
    NameTaken,
    Status,
    StoredTurn,
)
from app.roles.tools import ToolCall


class Answerer(Protocol):
    """What `Conversations.say` needs of the Assistant. A protocol, not the class: the
    Assistant makes its Conversations, so this module must not import it back."""

    roles: RoleBook

    @property
    def engine(self) -> EngineLike: ...

    def reply(self, text: str, history: Sequence[Turn] = (), **options: Any) -> Completion: ...

    def respond(
        self, text: str, history: Sequence[Turn] = (), **options: Any
    ) -> tuple[Verdict, Completion]: ...


_TEXT_PARTS = {"input_text", "output_text", "text", "refusal"}


def message_item(role: str, text: str) -> dict[str, Any]:
    """One message in the Responses shape: the user's (and system's) parts are input_text,
    the assistant's output_text."""
    kind = "output_text" if role == "assistant" else "input_text"
    part: dict[str, Any] = {"type": kind, "text": text}
    if role == "assistant":
        part["annotations"] = []
    return {"type": "message", "role": role, "content": [part]}


def message_text(item: dict[str, Any]) -> str:
    """The text of one message item (its text parts joined; a plain string content too)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(
        str(part.get("text", part.get("refusal", "")))
        for part in parts
        if isinstance(part, dict) and part.get("type") in _TEXT_PARTS
    )


def items_text(items: Sequence[dict[str, Any]], role: str | None = None) -> str:
    """The text of the message items (of `role`, when given), one message a line."""
    texts = [message_text(item) for item in items if _is_message(item, role)]
    return "\n".join(text for text in texts if text)


def history_of(turns: Sequence[StoredTurn]) -> list[Turn]:
    """A chain's messages as the prompt takes them: each turn's input, then its output, as the
    person saw it (a reply cut at its token limit or left by its reader is kept as far as it
    went, so the next turn does not follow a message with no answer; a turn cut by a crash has
    none). System and developer messages are instructions, not history, and are left out."""
    history: list[Turn] = []
    for turn in turns:
        history.extend(_turns_of(turn.input_items))
        history.extend(_turns_of(turn.output_items))
    return history


def _turns_of(items: Sequence[dict[str, Any]]) -> list[Turn]:
    """Items as Turns; function calls right after an assistant message (or each other) join
    that assistant turn, as the chat template shows one turn with its calls."""
    turns: list[Turn] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "assistant"):
            turns.append(Turn(item["role"], message_text(item)))
        elif kind == "function_call":
            call = ToolCall(
                str(item.get("name", "")),
                str(item.get("arguments", "{}")),
                id=str(item.get("call_id") or item.get("id") or ""),
            )
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant":
                turns[-1] = Turn("assistant", last.content, (*last.tool_calls, call))
            else:
                turns.append(Turn("assistant", "", (call,)))
        elif kind == "function_call_output":
            turns.append(Turn("tool", str(item.get("output", ""))))
    return turns


def usage_of(completion: Completion) -> dict[str, Any]:
    """A Completion's token counts in the Responses usage shape."""
    usage = completion.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


class TurnStream(Iterator[str]):
    """A reply's pieces, written into its stored turn when they end: `completed` when the
    reply ran to its end; `incomplete`, with the text so far, when it failed or was closed
    (or dropped) before that."""

    def __init__(self, store: ConversationStore, turn_id: str, completion: Completion) -> None:
        self.store = store
        self.turn_id = turn_id
        self.completion = completion
        self.pieces: list[str] = []
        self.finished = False

    def __next__(self) -> str:
        if self.finished:
            raise StopIteration
        try:
            piece = next(self.completion)
        except StopIteration:
            self._finish("completed")
            raise
        except BaseException:
            self._finish("incomplete")
            raise
        self.pieces.append(piece)
        return piece

    def close(self) -> None:
        """Stop the reply (the model is freed) and keep the turn as incomplete."""
        if not self.finished:
            self.completion.close()
            self._finish("incomplete")

    def __del__(self) -> None:
        """A stream dropped unread still leaves its turn finished (as incomplete)."""
        if not getattr(self, "finished", True):
            with suppress(Exception):  # nowhere to report it from a finalizer
                self.close()

    def _finish(self, status: Status) -> None:
        self.finished = True
        text = "".join(self.pieces)
        outputs = [message_item("assistant", text)] if text or status == "completed" else []
        self.store.finish_turn(
            self.turn_id, outputs, status=status, usage=usage_of(self.completion)
        )


@dataclass
class Said:
    """A message said into a conversation: the turn it is kept as, the mood verdict (when the
    reply was steered) and the reply's stream. Read the stream to its end (or close it)."""

    turn_id: str
    conversation_id: str
    verdict: Verdict | None
    stream: TurnStream


class Conversations:
    """The conversations of one store, answered by one Assistant. With `assistant=None`
    everything but `say` works, and no model is loaded (`allinone sessions`)."""

    def __init__(self, assistant: Answerer | None, store: ConversationStore) -> None:
        self.assistant = assistant
        self.store = store

    def list(self) -> builtins.list[Conversation]:
        """Every conversation, the most recently updated first."""
        return self.store.conversations()

    def get(self, key: str) -> Conversation:
        """By id or name; ConversationNotFound with a hint when there is none."""
        conversation = self.store.conversation(key)
        if conversation is None:
            raise ConversationNotFound(
                f"No conversation {key!r} in {self.store.path} "
                "(see the list with `allinone sessions list`)."
            )
        return conversation

    def open(self, key: str) -> builtins.list[StoredTurn]:
        """Its turns, oldest first (a branch's earlier turns too)."""
        return self.store.turns(self.get(key).id)

    def rename(self, key: str, name: str) -> Conversation:
        return self.store.rename(self.get(key).id, name)

    def delete(self, key: str) -> None:
        """Delete it and its turns; ConversationNotFound when there is none."""
        if not self.store.delete_conversation(self.get(key).id):
            raise ConversationNotFound(f"No conversation {key!r} (deleted meanwhile).")

    def export(self, key: str) -> Iterator[dict[str, Any]]:
        """One JSON-able dict per message (for JSONL), oldest first."""
        conversation = self.get(key)
        for turn in self.store.turns(conversation.id):
            yield from export_rows(conversation, turn)

    def say(
        self,
        key: str | None,
        text: str,
        *,
        steer: bool = True,
        create_as: str | None = None,
        **sampling: Any,
    ) -> Said:
        """Say `text` into the conversation `key` (an id or name) and stream the reply.

        `key=None` starts a new conversation, named `create_as` when given; a `key` that is not
        there is created under the name `create_as` when given, else ConversationNotFound.
        `steer`: feel, then reply (`Assistant.respond`); False: a plain reply. `sampling` goes
        to the Assistant as it is (temperature, max_tokens, role, ...).
        """
        require_text(text)
        assistant = self.assistant
        if assistant is None:
            raise TypeError("Conversations(None, store) cannot say: give it an Assistant.")
        conversation = self.store.conversation(key) if key is not None else None
        if key is not None and conversation is None and create_as is None:
            self.get(key)  # raises, with the hint
        history = history_of(self.store.turns(conversation.id)) if conversation else []
        verdict: Verdict | None = None
        if steer:
            verdict, completion = assistant.respond(text, history, **sampling)
        else:
            completion = assistant.reply(text, history, **sampling)
        if conversation is None and create_as is not None:
            conversation = self._create(create_as)
        try:
            turn = self.store.begin_turn(
                conversation.id if conversation else None,
                None,
                [message_item("user", text)],
                role=sampling.get("role") or assistant.roles.defaults.chat,
                model=assistant.engine.model_name,
                verdict=None if verdict is None else verdict_dict(verdict),
            )
        except BaseException:
            completion.close()  # never streamed: free the model
            raise
        stream = TurnStream(self.store, turn.id, completion)
        return Said(turn.id, turn.conversation_id, verdict, stream)

    def _create(self, name: str) -> Conversation:
        """A new conversation named `name`; the one another process made meanwhile, if so."""
        try:
            return self.store.create_conversation(name)
        except NameTaken:
            return self.get(name)


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {"label": verdict.label, "confidence": round(float(verdict.confidence), 4)}


def export_rows(conversation: Conversation, turn: StoredTurn) -> Iterator[dict[str, Any]]:
    """A turn's items as export rows: messages as {role, content}, other items as they are."""
    base = {
        "conversation_id": conversation.id,
        "conversation": conversation.name,
        "turn_id": turn.id,
        "created_at": turn.created_at,
        "status": turn.status,
    }
    users = [i for i, item in enumerate(turn.input_items) if _is_message(item, "user")]
    felt = users[-1] if users and turn.verdict is not None else None  # the message it was for
    outputs = turn.output_items if turn.status != "in_progress" else []
    for index, item in enumerate([*turn.input_items, *outputs]):
        if _is_message(item):
            row = {**base, "role": item.get("role"), "content": message_text(item)}
            if index == felt:
                row["verdict"] = turn.verdict
        else:
            row = {**base, **item}
        yield row


def _is_message(item: dict[str, Any], role: str | None = None) -> bool:
    return item.get("type", "message") == "message" and role in (None, item.get("role"))
