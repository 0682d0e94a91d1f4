"""Roles: load and validate prompts.yaml into typed objects.

A role is a system prompt, an input template, an output kind (a closed set of labels, decoded under
a GBNF grammar, or free text) and generation settings, plus optional few-shot examples. A new job is
a new entry in the YAML file, not new code. Validation happens once at load, and every error names
the file, the role and the field, so a typo is a one-line fix rather than a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import PromptsError, UnknownRole
from app.roles.bank import ExampleBank, load_bank
from app.roles.head import Head, fingerprint, load_head

TEXT_SLOT = "{text}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Output(_Strict):
    """What the role produces: one of `labels`, or free `text`."""

    kind: Literal["labels", "text"]
    labels: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _labels_match_kind(self) -> Output:
        if self.kind == "labels":
            if len(self.labels) < 2:
                raise ValueError("a 'labels' output needs at least two labels")
            if any(not label.strip() for label in self.labels):
                raise ValueError("labels must be non-empty strings")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels must be unique")
        elif self.labels:
            raise ValueError("only a 'labels' output takes labels")
        return self


class GenerationSettings(_Strict):
    """Sampling settings for free-text roles (label roles are decoded greedily)."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    repeat_penalty: float = Field(default=1.1, ge=0.5, le=2.0)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    stop: tuple[str, ...] = ()
    max_sentences: int = Field(
        default=0, ge=0, description="End the reply after this many sentences (0: no limit)."
    )
    no_copy: int = Field(
        default=0,
        ge=0,
        description="Never repeat a run of this many tokens of the user's message or of the "
        "few-shot replies shown (0: off; see app/llm/bans.py).",
    )
    candidates: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Drafts written together for each reply (the first as a lone reply would "
        "be, the others sampled at `draft_temperature`); the role's `judged_by` role scores "
        "them and only the best is sent, whole. 1: one reply, streamed token by token.",
    )
    draft_temperature: float = Field(
        default=0.8, ge=0.0, le=2.0, description="Temperature of drafts 2 and up."
    )


class FewShot(_Strict):
    """A few-shot turn: shown to the model before the real input, inside the cached prefix."""

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    tone: str | None = Field(
        default=None,
        description="Show this turn only when the steering role's verdict is this label "
        "(a text role's examples per tone: a sad message never sees the celebration).",
    )


class Tone(_Strict):
    """What a verdict of the steering role changes in a text role's reply."""

    instruction: str = Field(min_length=1, description="Added to the system prompt.")
    avoid: tuple[str, ...] = Field(
        default=(), description="Words the reply may not contain in this tone (app/llm/bans.py)."
    )
    confident: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="A verdict for this tone below this confidence is unsure: the reply avoids "
        "every tone's words (celebrate nothing), and the nearest bank group of any mood sets "
        "the tone. Above 0 the tone also needs the bank's agreement: a verdict whose nearest "
        "exchanges of any mood are of another label is unsure too (sarcasm).",
    )


class Bank(_Strict):
    """An example bank: the exchanges nearest to the message become the few-shot turns."""

    file: str = Field(description="The bank's YAML file, relative to the prompts file.")
    k: int = Field(default=2, ge=1, le=8, description="How many exchanges to show.")


class Role(_Strict):
    """One job the model can do."""

    name: str
    description: str = ""
    system: str = Field(min_length=1)
    template: str = TEXT_SLOT
    output: Output
    generation: GenerationSettings = GenerationSettings()
    examples: tuple[FewShot, ...] = ()
    steered_by: str | None = Field(
        default=None, description="A label role whose verdict on the input picks a tone."
    )
    tones: dict[str, Tone] = Field(
        default_factory=dict,
        description="Per label of `steered_by`: an extra system instruction (a string) or a "
        "mapping with `instruction` and `avoid`.",
    )
    bank: Bank | None = Field(
        default=None, description="Retrieved few-shot turns (text roles steered by a label role)."
    )
    judged_by: str | None = Field(
        default=None,
        description="A two-label role whose first label means a good reply: it scores the "
        "drafts when `generation.candidates` is above 1.",
    )
    avoid: tuple[str, ...] = Field(
        default=(), description="Words a text role's reply never contains, in any tone."
    )
    unless_said: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Named groups of words a text role's reply may contain only when the "
        "message, or a user or tool turn before it, has one of the group's words (grave news "
        "the person never gave: a death, an illness).",
    )
    head: str | None = Field(
        default=None,
        description="A learned head file (relative to the prompts file) for a two-label role.",
    )

    @field_validator("tones", mode="before")
    @classmethod
    def _tone_shorthand(cls, tones: object) -> object:
        """`负面: text` is short for `负面: {instruction: text}`."""
        if isinstance(tones, dict):
            return {
                label: {"instruction": tone} if isinstance(tone, str) else tone
                for label, tone in tones.items()
            }
        return tones

    @field_validator("template")
    @classmethod
    def _template_has_slot(cls, template: str) -> str:
        if TEXT_SLOT not in template:
            raise ValueError(f"the template must contain {TEXT_SLOT} where the input goes")
        return template

    @model_validator(mode="after")
    def _examples_use_labels(self) -> Role:
        if self.output.kind == "labels":
            for example in self.examples:
                if example.output not in self.output.labels:
                    raise ValueError(
                        f"example output {example.output!r} is not one of the labels "
                        f"{list(self.output.labels)}"
                    )
        toned = self.tones or self.bank or any(example.tone for example in self.examples)
        if toned and not self.steered_by:
            raise ValueError(
                "'tones', a 'bank' and examples with a 'tone' need 'steered_by' (the label role "
                "that reads the message first)"
            )
        if self.is_classifier and self.bank:
            raise ValueError("a 'bank' is for text roles; label roles take 'examples'")
        return self

    def fingerprint(self) -> str:
        """Identity of everything that shapes this role's answer-position logits."""
        examples = [(example.input, example.output) for example in self.examples]
        return fingerprint(self.system, self.template, examples, self.labels)

    @property
    def is_classifier(self) -> bool:
        return self.output.kind == "labels"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.output.labels

    def render(self, text: str) -> str:
        """The user turn for `text` (plain replace: braces in user text stay as they are)."""
        return self.template.replace(TEXT_SLOT, text)

    @property
    def lead(self) -> str:
        """The fixed text before {text} in the template (cached with the role's prefix)."""
        return self.template.split(TEXT_SLOT, 1)[0]

    def system_prompt(self, tone_label: str | None = None) -> str:
        """The system prompt, with the tone for `tone_label` appended when the role has one."""
        tone = self.tones.get(tone_label or "")
        if tone is None:
            return self.system.rstrip()
        return f"{self.system.rstrip()}\n{tone.instruction.strip()}"

    def examples_for(self, tone_label: str | None = None) -> tuple[FewShot, ...]:
        """The few-shot turns shown in `tone_label`'s tone: those without a tone, plus its own."""
        return tuple(e for e in self.examples if e.tone is None or e.tone == tone_label)

    def is_sure(self, tone_label: str | None, confidence: float) -> bool:
        """Whether a verdict of `tone_label` at `confidence` is as sure as its tone asks."""
        tone = self.tones.get(tone_label or "")
        return tone is None or confidence >= tone.confident

    def avoided(self, tone_label: str | None = None, confidence: float = 1.0) -> tuple[str, ...]:
        """Words the reply may not contain: the role's own, plus its tone's, plus every other
        tone's when the verdict behind the tone is less sure than the tone asks, or when no
        tone is known (a reply not felt: celebrate nothing, agree with nothing)."""
        tone = self.tones.get(tone_label or "")
        if tone is not None and self.is_sure(tone_label, confidence):
            return self.avoid + tone.avoid
        return self.avoid + tuple(word for other in self.tones.values() for word in other.avoid)

    def unsaid(self, said: Sequence[str]) -> tuple[str, ...]:
        """The `unless_said` words the reply may not contain after `said` (the message and the
        person's earlier turns): every group none of whose words was said."""
        return tuple(
            word
            for words in self.unless_said.values()
            if not any(word in text for word in words for text in said)
            for word in words
        )

    def grammar(self) -> str:
        """A GBNF grammar whose only sentences are this role's labels."""
        if not self.is_classifier:
            raise ValueError(f"role {self.name!r} produces free text, not labels")
        return "root ::= " + " | ".join(_gbnf_literal(label) for label in self.labels) + "\n"


def _gbnf_literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class Defaults(_Strict):
    """Which roles the built-in jobs use."""

    sentiment: str = "sentiment"
    chat: str = "assistant"


class RoleBook(_Strict):
    """All roles of one prompts file, by name (plus the learned heads some of them use)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    path: Path
    roles: dict[str, Role]
    defaults: Defaults = Defaults()
    heads: dict[str, Head] = Field(default_factory=dict)
    banks: dict[str, ExampleBank] = Field(default_factory=dict)

    def get(self, name: str) -> Role:
        try:
            return self.roles[name]
        except KeyError:
            known = ", ".join(sorted(self.roles)) or "(none)"
            raise UnknownRole(
                f"Unknown role {name!r}. Roles in {self.path}: {known}. "
                "Add it to that file or pick one of these."
            ) from None

    @property
    def sentiment(self) -> Role:
        return self.get(self.defaults.sentiment)

    def steering(self, role: Role) -> Role:
        """The label role whose verdict on a message picks `role`'s tone (default: sentiment)."""
        return self.get(role.steered_by or self.defaults.sentiment)

    @property
    def chat(self) -> Role:
        return self.get(self.defaults.chat)


def load_roles(path: Path | str, *, heads: bool = True) -> RoleBook:
    """Read and validate a prompts file; any problem becomes one PromptsError naming its place.

    `heads=False` skips the learned heads (for training new ones over stale or missing files).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptsError(
            f"{path}: file not found. Pass --prompts PATH or set ALLINONE_PROMPTS."
        ) from None
    except UnicodeDecodeError:
        raise PromptsError(f"{path}: not UTF-8 text. Save the file as UTF-8.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PromptsError(f"{path}:{where}: not valid YAML ({problem}).") from None
    return parse_roles(raw, path, heads=heads)


def parse_roles(raw: object, path: Path, *, heads: bool = True) -> RoleBook:
    """Validate already-parsed YAML data (split out so tests can feed dicts)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("roles"), dict) or not raw["roles"]:
        raise PromptsError(f"{path}: expected a mapping with a non-empty 'roles:' section.")
    unknown_top = set(raw) - {"roles", "defaults", "version"}
    if unknown_top:
        raise PromptsError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown_top))}.")

    roles: dict[str, Role] = {}
    for name, body in raw["roles"].items():
        if not isinstance(body, dict):
            raise PromptsError(f"{path}: role {name!r}: expected a mapping of fields.")
        try:
            roles[str(name)] = Role(name=str(name), **body)
        except ValidationError as error:
            raise PromptsError(f"{path}: role {name!r}: {_describe(error)}") from None
        except TypeError as error:  # e.g. a field given twice
            raise PromptsError(f"{path}: role {name!r}: {error}") from None

    try:
        defaults = Defaults(**(raw.get("defaults") or {}))
    except (ValidationError, TypeError) as error:
        detail = _describe(error) if isinstance(error, ValidationError) else str(error)
        raise PromptsError(f"{path}: defaults: {detail}") from None

    learned = {name: _load_head(role, path) for name, role in roles.items() if role.head and heads}
    banks = {
        name: load_bank(path.parent / role.bank.file, f"{path}: role {name!r}, field 'bank'")
        for name, role in roles.items()
        if role.bank
    }
    book = RoleBook(path=path, roles=roles, defaults=defaults, heads=learned, banks=banks)
    _check_links(book)
    return book


def _load_head(role: Role, path: Path) -> Head:
    where = f"{path}: role {role.name!r}, field 'head'"
    if len(role.labels) != 2:
        raise PromptsError(f"{where}: a head needs a role with exactly two labels.")
    head = load_head(path.parent / str(role.head), where)
    if head.labels != role.labels:
        raise PromptsError(
            f"{where}: the head is for labels {list(head.labels)}, "
            f"the role has {list(role.labels)}."
        )
    if head.fingerprint != role.fingerprint():
        raise PromptsError(
            f"{where}: the head was trained under a different prompt (system, template, examples "
            f"or labels changed). Retrain it: allinone train-head --role {role.name}"
        )
    return head


def _check_links(book: RoleBook) -> None:
    """Cross-role rules that one role alone cannot check."""
    where = book.path
    for job, name in (("sentiment", book.defaults.sentiment), ("chat", book.defaults.chat)):
        if name not in book.roles:
            raise PromptsError(f"{where}: defaults.{job}: role {name!r} is not defined.")
    if not book.sentiment.is_classifier:
        raise PromptsError(
            f"{where}: defaults.sentiment: role {book.sentiment.name!r} must output labels."
        )
    for role in book.roles.values():
        _check_judge(book, role)
        if role.steered_by is None:
            continue
        judge = book.roles.get(role.steered_by)
        if judge is None or not judge.is_classifier:
            raise PromptsError(
                f"{where}: role {role.name!r}, field 'steered_by': {role.steered_by!r} "
                "must name a role with a 'labels' output."
            )
        bank = book.banks.get(role.name)
        moods = {exchange.mood for exchange in bank.exchanges} if bank else set()
        for field, used, known in (
            ("tones", set(role.tones), set(judge.labels) | moods),
            ("examples.tone", {e.tone for e in role.examples if e.tone}, set(judge.labels)),
        ):
            stray = used - known
            if stray:
                raise PromptsError(
                    f"{where}: role {role.name!r}, field {field!r}: {sorted(stray)} are not "
                    f"labels of {judge.name!r} ({list(judge.labels)}) nor moods of its bank."
                )


def _check_judge(book: RoleBook, role: Role) -> None:
    """Drafts need a judge, and a judge is a two-label role."""
    where = f"{book.path}: role {role.name!r}"
    if role.judged_by is None:
        if role.generation.candidates > 1:
            raise PromptsError(
                f"{where}: generation.candidates is {role.generation.candidates}, but nothing "
                "picks among the drafts. Add 'judged_by: ROLE' or set candidates to 1."
            )
        return
    judge = book.roles.get(role.judged_by)
    if judge is None or len(judge.labels) != 2:
        raise PromptsError(
            f"{where}, field 'judged_by': {role.judged_by!r} must name a role with a 'labels' "
            "output of two labels (the first meaning a good reply)."
        )


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(role)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (typo?)"
        parts.append(f"field {field!r}: {message}")
    return "; ".join(parts)
