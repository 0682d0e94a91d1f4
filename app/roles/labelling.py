"""Label roles: a role's verdict on a text, decided by its learned head or by the label logits.

Why its own module: labels are asked for by the user (`classify`), by the reply (the steering
role's mood), by the example bank (its vectors are the mood step's states) and by the drafts'
judge, and all of them must read a text the same way. A role whose head belongs to another
model falls back to the label logits, with one warning naming the command that trains its head
(app/roles/user_heads.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from app.errors import InputError
from app.llm import Prompt
from app.roles.engine_like import EngineLike
from app.roles.head import Head
from app.roles.prompting import PromptBuilder, require_text
from app.roles.prompts import Role, RoleBook
from app.roles.user_heads import retrain_hint

log = logging.getLogger(__name__)

# auto: the role's learned head if it has one, else the label logits; logits: the label logits
# alone (= greedy decoding under the labels' grammar); grammar: llama.cpp's GBNF sampler itself.
Decode = Literal["auto", "logits", "grammar"]

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """A label role's answer: the label and how sure the model is (its share among the labels)."""

    label: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)


def head_verdict(role: Role, head: Head, states: np.ndarray) -> Verdict:
    """The head's verdict from the states of its layers (the label logits play no part)."""
    first = head.probability(states)
    return _verdict(role, [first, 1.0 - first])


def _verdict(role: Role, probabilities: list[float]) -> Verdict:
    """The label with the highest probability."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Verdict(
        label=role.labels[best],
        confidence=probabilities[best],
        probabilities=dict(zip(role.labels, probabilities, strict=True)),
    )


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter), read lazily."""
    window: list[T] = []
    for item in items:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


class Labeller:
    """Runs label roles on the engine: one text, many texts, or a text and its pooled states."""

    def __init__(self, engine: EngineLike, roles: RoleBook, prompts: PromptBuilder) -> None:
        self.engine = engine
        self.roles = roles
        self.prompts = prompts
        self._foreign_heads: set[str] = set()  # roles whose head we already warned about

    def label_role(self, name: str | None) -> Role:
        """The label role `name` (default: the sentiment role); a text role is refused."""
        chosen = self.roles.get(name or self.roles.defaults.sentiment)
        if not chosen.is_classifier:
            raise InputError(f"Role {chosen.name!r} writes free text; use reply() for it.")
        return chosen

    def classify(self, text: str, role: str | None = None, *, decode: Decode = "auto") -> Verdict:
        """Run a label role (default: the sentiment role) on `text`."""
        chosen = self.label_role(role)
        if decode == "grammar":
            prompt = self.prompts.prompt_for(chosen, require_text(text))
            label = self.engine.choose_with_grammar(prompt, chosen.grammar(), chosen.labels)
            return Verdict(label=label, confidence=float("nan"))
        return self.judge(text, chosen, use_head=decode == "auto")[0]

    def judge(
        self, text: str, role: Role, *, use_head: bool = True, layers: Sequence[int] = ()
    ) -> tuple[Verdict, np.ndarray]:
        """The verdict, and the pooled states of the head's layers (or of `layers` when the
        role's head is not in use): what the example bank compares messages by, and what a
        new head is fit on (scripts/train_reply_judge.py)."""
        prompt = self.prompts.prompt_for(role, require_text(text))
        head = self.head_for(role) if use_head else None
        if head is not None:  # the head decides: the pass stops after its deepest layer
            states = self.engine.read_states(prompt, head.layers)
            return head_verdict(role, head, states), states
        probabilities, states = self.engine.choose(prompt, role.labels, layers=tuple(layers))
        return _verdict(role, probabilities), states

    def head_for(self, role: Role) -> Head | None:
        """The role's learned head, if it was trained on the loaded model (else: label logits)."""
        head = self.roles.heads.get(role.name)
        if head is None or head.model == self.engine.model_name:
            return head
        if role.name not in self._foreign_heads:
            self._foreign_heads.add(role.name)
            log.warning(
                "Role %r has no learned head for the loaded model %r (its head is for %r), so "
                "it decides by the label logits: less accurate (sentiment on dev: 80.7%% "
                "instead of 86%% on the mirror model). Train one for this model: %s",
                role.name,
                self.engine.model_name,
                head.model,
                retrain_hint(role),
            )
        return None

    def classify_many(
        self, texts: Iterable[str], role: str | None = None, *, window: int = 512
    ) -> Iterator[Verdict]:
        """`classify` for each text, in order, `window` texts per engine call."""
        chosen = self.label_role(role)
        head = self.head_for(chosen)
        prompts = (self.prompts.prompt_for(chosen, require_text(text)) for text in texts)
        for pending in windows(prompts, window):
            yield from self._verdicts(chosen, head, pending)

    def _verdicts(self, role: Role, head: Head | None, prompts: list[Prompt]) -> Iterator[Verdict]:
        for prompt in prompts:
            self.engine.check_fits(prompt)
        if head is not None:  # the head decides: each pass stops after its deepest layer
            for states in self.engine.read_states_many(prompts, head.layers):
                yield head_verdict(role, head, states)
            return
        for probabilities, _ in self.engine.choose_many(prompts, role.labels):
            yield _verdict(role, probabilities)
