"""Prompts of every role: the system turn, the few-shot turns, and the history that still fits.

Why one place: a label role's prompt, a reply's and each example-bank group's prefix are built
from the same messages, and the engine reuses a cached prefix (and a group's prefix kept on
disk) only when every caller builds it token for token the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InputError, InputTooLong
from app.llm import Prompt, Sampling
from app.roles.bank import Exchange
from app.roles.engine_like import EngineLike
from app.roles.prompts import FewShot, Role
from app.roles.tools import ToolCall


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: an assistant turn may carry the tool calls it made, a
    "tool" turn is a call's result."""

    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()

    def message(self) -> dict[str, Any]:
        """As the chat template takes it."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.template_form() for call in self.tool_calls]
        return message


Truncation = Literal["auto", "disabled"]


@dataclass(frozen=True)
class Framing:
    """What a caller adds around a role's own prompt.

    `instructions`: a client's own instructions (OpenAI's `instructions`, or its system and
    developer messages). They are added after the role's system prompt, never instead of it:
    the role keeps its job and tone, the client's words count too, and the role's part stays the
    same tokens for every client, so its cached KV is reused. `truncation`: "auto" drops the
    oldest turns that do not fit; "disabled" refuses the request instead.
    """

    instructions: str | None = None
    truncation: Truncation = "auto"

    def system(self, role_prompt: str) -> str:
        """The system turn: the role's prompt, then the client's instructions."""
        extra = (self.instructions or "").strip()
        return f"{role_prompt}\n\n{extra}" if extra else role_prompt


PLAIN = Framing()


def require_text(text: str) -> str:
    """`text`, if it is text with something in it: a caller's mistake is an InputError, not a
    prompt the model answers anyway."""
    if not isinstance(text, str):
        raise InputError(f"Expected text, got {type(text).__name__}.")
    if not text.strip():
        raise InputError("The input is empty. Give some text.")
    return text


class PromptBuilder:
    """Turns a role, a tone, the turns shown and a conversation into the engine's prompt."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine

    def prefix_messages(
        self,
        role: Role,
        tone: str | None = None,
        examples: Sequence[FewShot | Exchange] = (),
        framing: Framing = PLAIN,
    ) -> list[dict[str, str]]:
        """The system turn (with `tone`'s instruction, then the caller's) and the turns shown:
        `examples`, or the role's own for that tone."""
        messages = [{"role": "system", "content": framing.system(role.system_prompt(tone))}]
        for example in examples or role.examples_for(tone):
            messages.append({"role": "user", "content": role.render(example.input)})
            messages.append({"role": "assistant", "content": example.output})
        return messages

    def prompt_for(self, role: Role, text: str) -> Prompt:
        """A label role's prompt for `text`: its prefix (system and examples) is cached."""
        prefix = self.prefix_messages(role)
        messages = [*prefix, {"role": "user", "content": role.render(text)}]
        return self.engine.chat_prompt(messages, prefix_messages=len(prefix), lead=role.lead)

    def shots_prefix(
        self, role: Role, tone: str | None, shots: Sequence[Exchange], framing: Framing = PLAIN
    ) -> tuple[list[dict[str, str]], int, list[FewShot | Exchange]]:
        """A reply's prefix messages, how many of them every group shares (system prompt and
        the tone's fixed turns), and the turns shown."""
        fixed = role.examples_for(tone)
        examples: list[FewShot | Exchange] = [*fixed, *shots]
        return self.prefix_messages(role, tone, examples, framing), 1 + 2 * len(fixed), examples

    def group_prompt(self, role: Role, shots: Sequence[Exchange]) -> Prompt:
        """The start of every reply whose shots are `shots` (their group's mood is the tone)."""
        prefix, base, _ = self.shots_prefix(role, shots[-1].mood, shots)
        user = {"role": "user", "content": role.render("。")}
        return self.engine.chat_prompt(
            [*prefix, user], prefix_messages=len(prefix), base_messages=base
        )

    def fit_history(
        self,
        role: Role,
        prefix: list[dict[str, str]],
        base: int,
        text: str,
        history: list[Turn],
        sampling: Sampling,
        *,
        tools: Sequence[dict[str, Any]] = (),
        reply_start: str = "",
        notes: Mapping[int, str] | None = None,
        truncation: Truncation = "auto",
    ) -> Prompt:
        """The reply's prompt: `prefix`, as much of `history` as leaves room for the reply
        (oldest turns dropped first, unless `truncation` is "disabled"), then `text`'s user
        turn. `notes[i]` goes as a system turn just before `history[i]` (`notes[len(history)]`
        before `text`): a message's tone when it differs from the conversation's. Every turn
        keeps its note in every later prompt, so each prompt begins with the last one."""
        notes = dict(notes or {})
        user = {"role": "user", "content": role.render(text)}
        reserve = min(sampling.max_tokens, self.engine.n_ctx // 4)
        while True:
            turns: list[dict[str, Any]] = []
            for index, turn in enumerate([*history, None]):
                if index in notes:
                    turns.append({"role": "system", "content": notes[index]})
                turns.append(turn.message() if turn is not None else user)
            prompt = self.engine.chat_prompt(
                [*prefix, *turns],
                prefix_messages=len(prefix),
                base_messages=base,
                tools=tools,
                reply_start=reply_start,
            )
            try:
                self.engine.check_fits(prompt, reserve=reserve)
                return prompt
            except InputTooLong as error:
                if not history:
                    raise
                if truncation == "disabled":
                    raise InputTooLong(
                        f"{error} The conversation does not fit and truncation is disabled: "
                        "allow truncation (oldest turns are dropped) or start a new conversation."
                    ) from None
                # Drop the oldest exchange (user + assistant) so turns stay paired.
                dropped = min(2, len(history))
                history = history[dropped:]
                notes = {index - dropped: note for index, note in notes.items() if index >= dropped}
