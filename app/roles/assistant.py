"""The dispatcher: route (role, input) to the one engine. This is the public Python API.

`Assistant` owns the loaded model and the roles. Every job is a role from prompts.yaml: label roles
answer with a `Verdict` (label + confidence), text roles with a stream of text pieces. The combined
flow runs a label role on the user's message first (the chat role's `steered_by`: the shipped
`mood`, the sentiment prompt with a head suited to everyday lines) and lets its verdict pick the
reply's tone (`tones` in the YAML), so the two jobs share one model and one conversation.

    assistant = Assistant.load()
    assistant.sentiment("这家店太棒了")          # Verdict(label='正面', confidence=0.98)
    for piece in assistant.reply("你好"):        # streamed text
        print(piece, end="")
    verdict, stream = assistant.respond("今天又被老板骂了。")
    reply = assistant.reply("提取城市", json_format=JsonFormat.from_schema(schema))
    reply.text(), reply.usage                     # the JSON text; tokens evaluated / sampled
    assistant.embed(["今天天气很好", "阳光明媚"])   # L2-normalised vectors, one row per text
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from app.atomic import atomic_open
from app.config import Settings, load_settings
from app.errors import InputError, InputTooLong
from app.jobs.files import windows
from app.jobs.training import retrain_hint, with_user_heads
from app.llm import Engine, Prompt, Sampling
from app.llm.bans import copy_runs
from app.llm.completion import Completion
from app.models import resolve_model_path
from app.roles.bank import Exchange
from app.roles.drafts import DRAFT_FOR_JUDGE, Drafts, best_draft
from app.roles.head import Head, check_fits, default_layers, features
from app.roles.json_output import JsonFormat
from app.roles.prompts import Example, Role, RoleBook, load_roles
from app.roles.tools import CALL_OPEN, Tool, ToolCall, call_format

log = logging.getLogger(__name__)

# auto: the role's learned head if it has one, else the label logits; logits: the label logits
# alone (= greedy decoding under the labels' grammar); grammar: llama.cpp's GBNF sampler itself.
Decode = Literal["auto", "logits", "grammar"]
# JSON and tool replies are not cut short by a chat role's max_tokens (120 for 小暖).
PLAIN_MAX_TOKENS = 512
# Sampling options a caller may set that a role's `generation` does not carry.
CALLER_OPTIONS = {"seed", "presence_penalty", "frequency_penalty", "top_logprobs"}
# Embeddings: the text after a fixed, cached system turn, so no text's first token is the
# sequence's first (whose states are outliers that would dominate a mean).
EMBED_SYSTEM = "阅读下面的文本。"


@dataclass(frozen=True)
class Verdict:
    """A label role's answer: the label and how sure the model is (its share among the labels)."""

    label: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)


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


class EngineLike(Protocol):
    """What the dispatcher needs from an engine (the real one, or a scripted fake in tests)."""

    n_ctx: int
    model_name: str
    n_layer: int
    middle_layers: range
    supports_tools: bool  # the model's chat template has a tools section

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...
    def phrase_tokens(self, phrases: Sequence[str]) -> list[tuple[int, ...]]: ...
    def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        prefix_messages: int = 0,
        lead: str = "",
        base_messages: int = 0,
        tools: Sequence[dict[str, Any]] = (),
        reply_start: str = "",
    ) -> Prompt: ...
    def check_fits(self, prompt: Prompt, reserve: int = 1) -> None: ...
    def holds_prefix(self, prompt: Prompt) -> bool: ...
    def offer_prefix_state(self, prompt: Prompt, state: bytes) -> bool: ...
    def prefix_state(self, prompt: Prompt) -> bytes: ...
    def choose(
        self, prompt: Prompt, labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> tuple[list[float], Any]: ...
    def choose_many(
        self, prompts: Sequence[Prompt], labels: Sequence[str], *, layers: Sequence[int] = ()
    ) -> list[tuple[list[float], Any]]: ...
    def read_states(self, prompt: Prompt, layers: Sequence[int]) -> np.ndarray: ...
    def read_states_many(
        self, prompts: Sequence[Prompt], layers: Sequence[int]
    ) -> list[np.ndarray]: ...
    def choose_with_grammar(self, prompt: Prompt, grammar: str, labels: Sequence[str]) -> str: ...
    def stream(
        self, prompt: Prompt, sampling: Sampling, *, reply_start: str = ""
    ) -> Completion: ...


class Assistant:
    """One model, many jobs."""

    def __init__(self, engine: EngineLike, roles: RoleBook, settings: Settings | None = None):
        self.engine = engine
        self.roles = roles
        self.settings = settings or load_settings()
        self._foreign_heads: set[str] = set()  # roles whose head we already warned about
        self._banks_ready: set[str] = set()  # text roles whose bank prepare_bank has read

    @classmethod
    def load(
        cls, model: str | Path | None = None, *, heads: bool = True, **overrides: object
    ) -> Assistant:
        """Load settings (defaults < env < arguments), the roles and the model, once.

        `heads=False` leaves the learned heads out (`allinone train-head` trains new ones).
        A role whose shipped head belongs to another model takes the head this machine
        trained for the loaded model, if there is one (app/jobs/training.py).
        """
        settings = load_settings(model=str(model) if model else None, **overrides)
        roles = load_roles(settings.prompts, heads=heads)
        engine = Engine(
            resolve_model_path(settings),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_batch=settings.n_batch,
            extra_buffers=settings.extra_buffers,
            parallel=settings.parallel,
            verbose=settings.verbose,
        )
        if heads:
            roles = with_user_heads(roles, engine.model_name)
        for name, head in roles.heads.items():
            if head.model == engine.model_name:  # a foreign head falls back to the logits
                where = f"{settings.prompts}: role {name!r}, field 'head'"
                check_fits(head, engine.middle_layers, engine.n_embd, name, where)
        return cls(engine, roles, settings)

    # -- label roles ---------------------------------------------------------------------

    def sentiment(self, text: str, *, decode: Decode = "auto") -> Verdict:
        """正面 or 负面 for `text`, with the model's confidence."""
        return self.classify(text, self.roles.defaults.sentiment, decode=decode)

    def classify(self, text: str, role: str | None = None, *, decode: Decode = "auto") -> Verdict:
        """Run a label role (default: the sentiment role) on `text`."""
        chosen = self._label_role(role)
        if decode == "grammar":
            prompt = self.prompt_for(chosen, _require_text(text))
            label = self.engine.choose_with_grammar(prompt, chosen.grammar(), chosen.labels)
            return Verdict(label=label, confidence=float("nan"))
        return self._judge(text, chosen, use_head=decode == "auto")[0]

    def _judge(
        self, text: str, role: Role, *, use_head: bool = True, layers: Sequence[int] = ()
    ) -> tuple[Verdict, np.ndarray]:
        """The verdict, and the pooled states of the head's layers (or of `layers` when the
        role's head is not in use): what the example bank compares messages by."""
        prompt = self.prompt_for(role, _require_text(text))
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
        """`classify` for each text, in order, `window` texts per engine call.

        The engine decodes texts of equal token length together (the same verdicts, fewer
        llama.cpp calls); a bad text raises before any text of its window is decoded.
        """
        chosen = self._label_role(role)
        head = self.head_for(chosen)
        prompts = (self.prompt_for(chosen, _require_text(text)) for text in texts)
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

    # -- text roles ----------------------------------------------------------------------

    def reply(
        self,
        text: str,
        history: Sequence[Turn] = (),
        *,
        role: str | None = None,
        tone: str | None = None,
        json_format: JsonFormat | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: str = "auto",
        **sampling: object,
    ) -> Completion:
        """Stream the reply of a text role (default: the chat role) to `text` after `history`.

        `tone` is a label of the role's `steered_by` role (e.g. 负面) and adds its tone
        instruction. Old turns are dropped, oldest first, to keep the prompt inside the context.
        `json_format` makes the reply one JSON value of that format (decoded under its grammar);
        `tools` lets the model call functions: `tool_choice` "auto" (it decides), "required"
        (one call, grammar-bound), a tool's name (a call to it) or "none".
        Read `split_tool_calls(reply.text(), tools)` for the calls (app/roles/tools.py).
        """
        chosen = self.roles.get(role or self.roles.defaults.chat)
        if tool_choice == "none":
            tools = ()
        if json_format is not None or tools:
            return self._plain_reply(
                chosen, text, history, json_format, tools, tool_choice, sampling
            )
        return self._reply(chosen, text, history, tone, 1.0, (), sampling)

    def _plain_reply(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        json_format: JsonFormat | None,
        tools: Sequence[Tool],
        tool_choice: str,
        sampling: dict[str, object],
    ) -> Completion:
        """JSON and tool replies: the role's system prompt, no tone, no shown turns, and none of
        the chat guards (banned phrases, sentence limit, its stop strings, no-copy, repeat
        penalty): each could cut the JSON short or ban the very words an argument must copy."""
        if role.is_classifier:
            raise InputError(f"Role {role.name!r} answers with labels; use classify() for it.")
        if json_format is not None and tools:
            raise InputError("response_format: JSON output and tools cannot be combined.")
        if tools and not self.engine.supports_tools:
            raise InputError(
                f"tools: the chat template of {self.engine.model_name!r} has no tools section, "
                "so this model cannot be shown tools. Leave tools out, or load a model whose "
                "template has one (Qwen2.5)."
            )
        forced = bool(tools) and tool_choice != "auto"
        if forced:
            name = None if tool_choice == "required" else tool_choice
            json_format = call_format(tools, name)
        system = role.system_prompt(None)
        if json_format is not None and not forced:
            system += "\n\n" + json_format.instruction()
        given = {key: value for key, value in sampling.items() if value is not None}
        defaults = {"stop": (), "max_tokens": PLAIN_MAX_TOKENS, "repeat_penalty": 1.0}
        settings, _, _ = self._sampling(role, {**defaults, **given})
        grammar = json_format.grammar if json_format is not None else ""
        settings = replace(settings, max_sentences=0, grammar=grammar)
        start = CALL_OPEN if forced else ""
        prompt = self._fit_history(
            role,
            [{"role": "system", "content": system}],
            1,
            _require_text(text),
            list(history),
            settings,
            tools=[tool.spec() for tool in tools],
            reply_start=start,
        )
        return self.engine.stream(prompt, settings, reply_start=start)

    def _reply(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        tone: str | None,
        confidence: float,
        shots: Sequence[Exchange],
        sampling: dict[str, object],
    ) -> Completion:
        if role.is_classifier:
            raise InputError(f"Role {role.name!r} answers with labels; use classify() for it.")
        settings, no_copy, drafts = self._sampling(role, sampling)
        text = _require_text(text)
        while True:  # a small context (the Pi profile) drops retrieved turns before failing
            prefix, base, examples = self._shots_prefix(role, tone, shots)
            try:
                prompt = self._fit_history(role, prefix, base, text, list(history), settings)
                break
            except InputTooLong:
                if not shots:
                    raise
                shots = shots[1:]  # the least typical first (the most typical comes last)
        if shots and not self.engine.holds_prefix(prompt):  # a group's prefix, kept on disk
            kept = self._prefix_file(prompt)
            if kept.is_file():
                self.engine.offer_prefix_state(prompt, kept.read_bytes())
        banned = list(self.engine.phrase_tokens(role.avoided(tone, confidence)))
        # Not the message, not a turn shown, and not the instructions (a 0.5B model reads its
        # tone instruction out as the reply's end: seen here).
        for source in [text, role.system_prompt(tone), *(e.output for e in examples)]:
            banned += copy_runs(self.engine.tokenize(source), no_copy)
        settings = replace(settings, banned=tuple(banned), no_repeat=no_copy)
        if drafts.candidates > 1:
            return self._best_of(role, text, prompt, settings, drafts)
        return self.engine.stream(prompt, settings)

    def _best_of(
        self, role: Role, text: str, prompt: Prompt, settings: Sampling, plan: Drafts
    ) -> Completion:
        """`plan.candidates` drafts of the reply, written together: the first as a lone reply,
        the others sampled at `plan.temperature` with the seeds after the reply's. The judge
        role's best is sent (app/roles/drafts.py)."""
        judge = self._label_role(role.judged_by)
        drafts = [self.engine.stream(prompt, settings)]
        drafts += [
            self.engine.stream(
                prompt, replace(settings, seed=settings.seed + number, temperature=plan.temperature)
            )
            for number in range(1, plan.candidates)
        ]

        def score(draft: str) -> float:
            verdict, _ = self._judge(DRAFT_FOR_JUDGE.format(message=text, reply=draft), judge)
            return verdict.probabilities[judge.labels[0]]

        outer = Completion(len(prompt.tokens))
        return outer.run(best_draft(outer, drafts, score))

    def respond(
        self,
        text: str,
        history: Sequence[Turn] = (),
        *,
        role: str | None = None,
        **sampling: object,
    ) -> tuple[Verdict, Completion]:
        """Feel, then reply: the steering role's verdict on `text` picks the reply's tone (its
        instruction and the words it avoids), and, when the role has an example bank, the
        exchanges of the group nearest to `text` become the few-shot turns (found with the
        states the verdict's decode produced anyway). A message nearest a group whose mood the
        steering role has no label for (中性 questions) takes that group's tone instead."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        steering = self._label_role(self.roles.steering(chosen).name)
        bank = self.roles.banks.get(chosen.name)
        layers = self._bank_layers(steering) if bank else ()
        verdict, states = self._judge(text, steering, layers=layers)
        shots: list[Exchange] = []
        tone = verdict.label
        if bank is not None and chosen.bank is not None:
            self.prepare_bank(chosen.name)
            sure = chosen.is_sure(verdict.label, verdict.confidence)
            mood = verdict.label if sure else None  # unsure: the nearest group of any mood
            shots = bank.shots(features(states), chosen.bank.k, mood, steering.labels)
            if shots and (not sure or shots[-1].mood not in steering.labels):
                # The nearest exchanges set the tone when the verdict is unsure (sarcasm reads
                # as 正面 at 0.6-0.86), or when they are of a mood the steering role has no
                # label for (中性 questions, which the two-label mood step calls 负面).
                tone = shots[-1].mood
        return verdict, self._reply(
            chosen, text, history, tone, verdict.confidence, shots, sampling
        )

    def prepare_bank(
        self, role: str | None = None, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Read the role's example bank into vectors and decode each group's prompt prefix,
        once per model (both kept on disk under `settings.cache_dir`: later loads take
        milliseconds). `respond` does this on first use; call it first to show
        `progress(done, total)`. A role without a bank: nothing to do."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        bank = self.roles.banks.get(chosen.name)
        if bank is None or chosen.bank is None or chosen.name in self._banks_ready:
            return
        steering = self._label_role(self.roles.steering(chosen).name)
        layers = self._bank_layers(steering)
        key = bank.cache_key(self.engine.model_name, steering.fingerprint(), layers)
        cache = self.settings.cache_dir / "banks" / f"{chosen.name}-{key}.npy"

        def embed(texts: Sequence[str]) -> np.ndarray:
            if not cache.is_file():
                log.warning(
                    "Reading the %s role's example bank (%d exchanges) once for %r: about a "
                    "minute.",
                    chosen.name,
                    len(texts),
                    self.engine.model_name,
                )
            rows = []
            for done, text in enumerate(texts, start=1):
                rows.append(features(self._judge(text, steering, layers=layers)[1]))
                if progress:
                    progress(done, len(texts))
            return np.stack(rows)

        if not bank.indexed:
            bank.index(embed, cache)
        # Each group's prompt prefix, decoded once per model and kept on disk (app/roles/bank.py).
        groups = bank.groups(chosen.bank.k)
        for done, shots in enumerate(groups, start=1):
            prompt = self._group_prompt(chosen, shots)
            kept = self._prefix_file(prompt)
            if not kept.is_file():
                kept.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(kept, "wb") as out:
                    out.write(self.engine.prefix_state(prompt))
            if progress:
                progress(len(bank.exchanges) + done, len(bank.exchanges) + len(groups))
        self._banks_ready.add(chosen.name)

    def _group_prompt(self, role: Role, shots: Sequence[Exchange]) -> Prompt:
        """The start of every reply whose shots are `shots` (their group's mood is the tone)."""
        prefix, base, _ = self._shots_prefix(role, shots[-1].mood, shots)
        user = {"role": "user", "content": role.render("。")}
        return self.engine.chat_prompt(
            [*prefix, user], prefix_messages=len(prefix), base_messages=base
        )

    def _shots_prefix(
        self, role: Role, tone: str | None, shots: Sequence[Exchange]
    ) -> tuple[list[dict[str, str]], int, list[Example | Exchange]]:
        """A reply's prefix messages, how many of them every group shares (system prompt and
        the tone's fixed turns), and the turns shown."""
        fixed = role.examples_for(tone)
        examples: list[Example | Exchange] = [*fixed, *shots]
        return self._prefix_messages(role, tone, examples), 1 + 2 * len(fixed), examples

    def _prefix_file(self, prompt: Prompt) -> Path:
        """Where a prefix's KV state is kept: named by the model and the prefix's tokens."""
        tokens = ",".join(map(str, prompt.tokens[: prompt.prefix_len]))
        digest = hashlib.sha256(f"{self.engine.model_name}|{tokens}".encode()).hexdigest()[:24]
        return self.settings.cache_dir / "prefixes" / f"{digest}.kv"

    def _bank_layers(self, steering: Role) -> tuple[int, ...]:
        """The layers a message is compared by: the steering role's head's, when it is in use
        (no extra work: the verdict reads them anyway), else those a new head would read."""
        head = self.head_for(steering)
        if head is not None:
            return head.layers
        return default_layers(self.engine.n_layer)

    # -- embeddings ----------------------------------------------------------------------

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text (shape (len(texts), n_embd)): the mean hidden state
        over the text's tokens of the middle layers a head reads (app/roles/head.py), averaged.
        Texts that mean alike are close by cosine; the same model, no second one loaded."""
        layers = default_layers(self.engine.n_layer)
        prompts = [
            self._embed_prompt(_require_text(text))
            for text in ([texts] if isinstance(texts, str) else texts)
        ]
        if not prompts:
            raise InputError("Give at least one text to embed.")
        rows = []
        for states in self.engine.read_states_many(prompts, layers):  # stops after the last
            vector = features(states)[states.shape[-1] // 2 :]  # the mean half, not the last
            rows.append(vector / (np.linalg.norm(vector) or 1.0))
        return np.stack(rows).astype(np.float32)

    def _embed_prompt(self, text: str) -> Prompt:
        """The cached system turn, the user turn's opening, then the text and nothing after it
        (the template's tail would be the same in every vector)."""
        system = {"role": "system", "content": EMBED_SYSTEM}
        prompt = self.engine.chat_prompt(
            [system, {"role": "user", "content": text}], prefix_messages=1
        )
        end = prompt.prefix_len + len(self.engine.tokenize(text))
        return Prompt(tokens=prompt.tokens[:end], prefix_len=prompt.prefix_len)

    def run(self, role: str, text: str) -> Verdict | Iterator[str]:
        """Any role by name: a Verdict for label roles, a text stream for text roles."""
        chosen = self.roles.get(role)
        return (
            self.classify(text, chosen.name)
            if chosen.is_classifier
            else self.reply(text, role=chosen.name)
        )

    # -- prompt building -----------------------------------------------------------------

    def _label_role(self, name: str | None) -> Role:
        chosen = self.roles.get(name or self.roles.defaults.sentiment)
        if not chosen.is_classifier:
            raise InputError(f"Role {chosen.name!r} writes free text; use reply() for it.")
        return chosen

    def _prefix_messages(
        self, role: Role, tone: str | None = None, examples: Sequence[Example | Exchange] = ()
    ) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": role.system_prompt(tone)}]
        for example in examples or role.examples_for(tone):
            messages.append({"role": "user", "content": role.render(example.input)})
            messages.append({"role": "assistant", "content": example.output})
        return messages

    def prompt_for(self, role: Role, text: str) -> Prompt:
        prefix = self._prefix_messages(role)
        messages = [*prefix, {"role": "user", "content": role.render(text)}]
        return self.engine.chat_prompt(messages, prefix_messages=len(prefix), lead=role.lead)

    def _fit_history(
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
    ) -> Prompt:
        user = {"role": "user", "content": role.render(text)}
        reserve = min(sampling.max_tokens, self.engine.n_ctx // 4)
        while True:
            turns = [turn.message() for turn in history]
            prompt = self.engine.chat_prompt(
                [*prefix, *turns, user],
                prefix_messages=len(prefix),
                base_messages=base,
                tools=tools,
                reply_start=reply_start,
            )
            try:
                self.engine.check_fits(prompt, reserve=reserve)
                return prompt
            except InputTooLong:
                if not history:
                    raise
                # Drop the oldest exchange (user + assistant) so turns stay paired.
                history = history[2:] if len(history) >= 2 else []

    def _sampling(self, role: Role, overrides: dict[str, object]) -> tuple[Sampling, int, Drafts]:
        """The role's generation settings with the caller's overrides, its `no_copy` and its
        drafts (settings of the reply, not of one sampler)."""
        settings = role.generation.model_dump()
        unknown = set(overrides) - set(settings) - CALLER_OPTIONS
        if unknown:
            raise InputError(f"Unknown sampling option(s): {', '.join(sorted(unknown))}.")
        settings.update({key: value for key, value in overrides.items() if value is not None})
        if settings.get("seed") is None:  # no seed given: a fresh one per reply
            settings["seed"] = (
                self.settings.seed if self.settings.seed is not None else time.time_ns() % 2**31
            )
        settings["stop"] = tuple(settings.get("stop") or ())
        no_copy = int(settings.pop("no_copy"))  # type: ignore[call-overload]
        drafts = Drafts(
            int(settings.pop("candidates")),  # type: ignore[call-overload]
            float(settings.pop("draft_temperature")),  # type: ignore[arg-type]
        )
        if drafts.candidates > 1 and not role.judged_by:  # else the drafts would be ignored
            raise InputError(
                f"candidates={drafts.candidates} needs a judge, and role {role.name!r} has none: "
                "add 'judged_by: ROLE' to it in prompts.yaml, or ask for 1 candidate."
            )
        return Sampling(**settings), no_copy, drafts  # type: ignore[arg-type]


def _verdict(role: Role, probabilities: list[float]) -> Verdict:
    """The label with the highest probability."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Verdict(
        label=role.labels[best],
        confidence=probabilities[best],
        probabilities=dict(zip(role.labels, probabilities, strict=True)),
    )


def head_verdict(role: Role, head: Head, states: np.ndarray) -> Verdict:
    """The head's verdict from the states of its layers (the label logits play no part)."""
    first = head.probability(states)
    return _verdict(role, [first, 1.0 - first])


def _require_text(text: str) -> str:
    if not isinstance(text, str):
        raise InputError(f"Expected text, got {type(text).__name__}.")
    if not text.strip():
        raise InputError("The input is empty. Give some text.")
    return text
