"""Replies of text roles: plain (JSON and tool replies), toned (the chat), and best of drafts.

Why its own module: a reply is a policy over the prompt, not only a prompt. The chat's reply
takes the steering role's verdict as its tone (its instruction and the words it avoids), the
example bank's nearest group as its shown turns, guards against copying the message or the
turns shown, and, when the role asks for drafts, the judge's pick among several. A JSON or tool
reply takes none of that: each guard could cut the JSON short or ban a word an argument must copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from app.config import Settings
from app.errors import InputError, InputTooLong
from app.llm import Completion, Prompt, Sampling
from app.llm.bans import copy_runs
from app.llm.lru import Lru
from app.roles.bank import Exchange
from app.roles.bank_cache import BankCache
from app.roles.drafts import Drafts, best_of
from app.roles.engine_like import EngineLike
from app.roles.head import features
from app.roles.json_output import JsonFormat
from app.roles.labelling import Labeller, Verdict
from app.roles.prompting import PLAIN, Framing, PromptBuilder, Turn, require_text
from app.roles.prompts import Role, RoleBook
from app.roles.tools import CALL_OPEN, Tool, call_format

log = logging.getLogger("allinone.replies")

# JSON and tool replies are not cut short by a chat role's max_tokens (120 for 小暖).
PLAIN_MAX_TOKENS = 512
# Sampling options a caller may set that a role's `generation` does not carry.
# A tools request's reply is a call when the model opens it with a tool call this likely.
CALL_CHANCE = 0.5
# How a call opens: the template's tag, or (seen from the 0.5B models) the call's JSON bare.
CALL_OPENINGS = (CALL_OPEN, '{"')
# Messages whose verdict, tone and shown turns are kept (a conversation's opening is felt again
# every turn; a verdict is the same every time: labels are read greedily).
FELT = 64
CALLER_OPTIONS = {"seed", "presence_penalty", "frequency_penalty", "top_logprobs"}


class Replier:
    """Writes a text role's reply on the engine, as the role and the caller's options ask."""

    def __init__(
        self,
        engine: EngineLike,
        roles: RoleBook,
        settings: Settings,
        prompts: PromptBuilder,
        labeller: Labeller,
        bank_cache: BankCache,
    ) -> None:
        self.engine = engine
        self.roles = roles
        self.settings = settings
        self.prompts = prompts
        self.labeller = labeller
        self.bank_cache = bank_cache
        self._felt: Lru[tuple[str, str], tuple[Verdict, str | None, list[Exchange]]] = Lru(FELT)

    def respond(
        self,
        text: str,
        history: Sequence[Turn],
        role: str | None,
        sampling: dict[str, object],
        framing: Framing = PLAIN,
    ) -> tuple[Verdict, Completion]:
        """Feel, then reply: the steering role's verdict on `text` picks the tone, and the
        bank's group nearest to `text` (by the states that verdict read) the turns shown.

        In a conversation the prompt's start (tone and turns shown) is the one its opening
        message picked, and a message whose tone differs from the opening's gets that tone as
        a note just before it, in this prompt and every later one (`fit_history`). So every
        turn's prompt begins with the last one's, and the KV already decoded for the earlier
        turns is reused."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        verdict, tone, shots = self._feel(chosen, text)
        prefix_tone, notes = tone, {}
        opening = next((turn.content for turn in history if turn.role == "user"), None)
        if opening is not None:
            _, prefix_tone, shots = self._feel(chosen, opening)
            said = [(i, turn.content) for i, turn in enumerate(history) if turn.role == "user"]
            for index, message in [*said, (len(history), text)]:
                mood = tone if index == len(history) else self._feel(chosen, message)[1]
                if mood != prefix_tone and mood in chosen.tones:
                    notes[index] = chosen.tones[mood].instruction.strip()
        reply = self.toned(
            chosen,
            text,
            history,
            tone,
            verdict.confidence,
            shots,
            sampling,
            framing,
            prefix_tone=prefix_tone,
            notes=notes,
        )
        return verdict, reply

    def _feel(self, role: Role, text: str) -> tuple[Verdict, str | None, list[Exchange]]:
        """The steering verdict on `text`, the tone it picks and the bank's turns to show
        (kept for the last FELT messages: a conversation's opening is felt again every turn)."""
        key = (role.name, text)
        felt = self._felt.get(key)
        if felt is not None:
            return felt
        steering = self.labeller.label_role(self.roles.steering(role).name)
        bank = self.roles.banks.get(role.name)
        layers = self.bank_cache.layers(steering) if bank else ()
        verdict, states = self.labeller.judge(text, steering, layers=layers)
        shots: list[Exchange] = []
        tone = verdict.label
        if bank is not None and role.bank is not None:
            self.bank_cache.prepare(role.name)
            found = features(states)
            sure = role.is_sure(verdict.label, verdict.confidence)
            tone_asked = role.tones.get(verdict.label)
            if sure and tone_asked is not None and tone_asked.confident > 0:
                # A tone that asks for confidence (正面: celebration) also asks the bank: when
                # the nearest exchanges of any mood are of another label, the two readings
                # disagree and the verdict counts as unsure ("真棒，排了两个小时队，轮到我刚好
                # 卖完" reads as 正面 at 0.9+; its nearest exchanges are sarcasm, 负面).
                nearest = bank.shots(found, role.bank.k, None, steering.labels)
                there = nearest[-1].mood if nearest else verdict.label
                sure = there == verdict.label or there not in steering.labels
            mood = verdict.label if sure else None  # unsure: the nearest group of any mood
            shots = bank.shots(found, role.bank.k, mood, steering.labels)
            if shots and (not sure or shots[-1].mood not in steering.labels):
                # The nearest exchanges set the tone when the verdict is unsure (sarcasm reads
                # as 正面 at 0.6-0.86), or when they are of a mood the steering role has no
                # label for (中性 questions, which the two-label mood step calls 负面).
                tone = shots[-1].mood
        felt = (verdict, tone, shots)
        self._felt.put(key, felt)
        return felt

    def toned(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        tone: str | None,
        confidence: float,
        shots: Sequence[Exchange],
        sampling: dict[str, object],
        framing: Framing = PLAIN,
        *,
        prefix_tone: str | None = None,
        notes: Mapping[int, str] | None = None,
    ) -> Completion:
        """The chat's reply in `tone` (a verdict at `confidence`), with `shots` shown before
        `history`, and the guards against copying and the tone's words. The system prompt
        carries `prefix_tone` (default: `tone`); `notes` go before the turns they index."""
        _require_text_role(role)
        settings, no_copy, drafts = reply_settings(role, sampling, self.settings.seed)
        text = require_text(text)
        prefix_tone = tone if prefix_tone is None else prefix_tone
        while True:  # a small context (the Pi profile) drops retrieved turns before failing
            prefix, base, examples = self.prompts.shots_prefix(role, prefix_tone, shots, framing)
            try:
                prompt = self.prompts.fit_history(
                    role,
                    prefix,
                    base,
                    text,
                    list(history),
                    settings,
                    notes=notes,
                    truncation=framing.truncation,
                )
                break
            except InputTooLong:
                if not shots:
                    raise
                shots = shots[1:]  # the least typical first (the most typical comes last)
        if shots:  # a group's prefix, kept on disk
            self.bank_cache.offer_kept_prefix(prompt)
        said = [text, *(turn.content for turn in history if turn.role != "assistant")]
        # Not the message, not a turn shown, and not the instructions (a 0.5B model reads its
        # tone instruction out as the reply's end: seen here).
        instructions = [prefix[0]["content"], *(notes or {}).values()]
        not_copied = [text, *instructions, *(e.output for e in examples)]
        banned = guards(self.engine, role, tone, confidence, said, not_copied, no_copy)
        settings = replace(settings, banned=banned, no_repeat=no_copy)
        if drafts.candidates > 1:
            return best_of(self.engine, self.labeller, role, text, prompt, settings, drafts)
        return self.engine.stream(prompt, settings)

    def answer(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        sampling: dict[str, object],
        framing: Framing = PLAIN,
        *,
        steer: bool = True,
        json_format: JsonFormat | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: str = "auto",
    ) -> tuple[Verdict | None, Completion]:
        """The one path a reply takes, whichever front end asked: the verdict (None when the
        reply was not felt) and the reply.

        Only JSON output and a tool call skip the mood step and the guards (`plain`). A tools
        request the model answers in prose is a chat reply like any other; so is a plain chat
        message: felt when the role is steered (and `steer`), its tone and guards applied.
        Unfelt (`steer` False, or a role with no steering role), the reply still keeps every
        guard: with no tone known, it avoids every tone's words (`Role.avoided`)."""
        _require_text_role(role)
        if json_format is not None or (tools and tool_choice != "auto"):
            return None, self.plain(
                role, text, history, json_format, tools, tool_choice, sampling, framing
            )
        if tools:
            return self._call_or_prose(role, text, history, tools, sampling, framing)
        if steer and role.steered_by:
            return self.respond(text, history, role.name, sampling, framing)
        return None, self.toned(role, text, history, None, 1.0, (), sampling, framing)

    def plain(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        json_format: JsonFormat | None,
        tools: Sequence[Tool],
        tool_choice: str,
        sampling: dict[str, object],
        framing: Framing = PLAIN,
    ) -> Completion:
        """JSON and tool replies: the role's system prompt, no tone, no shown turns, and none of
        the chat guards (banned phrases, sentence limit, its stop strings, no-copy, repeat
        penalty): each could cut the JSON short or ban the very words an argument must copy.
        Tools with `tool_choice` "auto" never come here: `answer` decides call or prose first
        (`_call_or_prose`)."""
        _require_text_role(role)
        if json_format is not None and tools:
            raise InputError("response_format: JSON output and tools cannot be combined.")
        if tools and not self.engine.supports_tools:
            raise InputError(
                f"tools: the chat template of {self.engine.model_name!r} has no tools section, "
                "so this model cannot be shown tools. Leave tools out, or load a model whose "
                "template has one (Qwen2.5)."
            )
        forced = bool(tools)
        if forced:
            name = None if tool_choice == "required" else tool_choice
            json_format = call_format(tools, name)
        system = framing.system(role.system_prompt(None))
        if json_format is not None and not forced:
            system += "\n\n" + json_format.instruction()
        given = {key: value for key, value in sampling.items() if value is not None}
        defaults = {"stop": (), "max_tokens": PLAIN_MAX_TOKENS, "repeat_penalty": 1.0}
        settings, _, _ = reply_settings(role, {**defaults, **given}, self.settings.seed)
        grammar = json_format.grammar if json_format is not None else ""
        settings = replace(settings, max_sentences=0, grammar=grammar)
        start = CALL_OPEN if forced else ""
        prompt = tools_prompt(
            self.prompts, role, system, text, history, tools, settings, framing, start
        )
        return self.engine.stream(prompt, settings, reply_start=start)

    def _call_or_prose(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        tools: Sequence[Tool],
        sampling: dict[str, object],
        framing: Framing,
    ) -> tuple[Verdict | None, Completion]:
        """A tool call, or a prose reply on the chat role's own path, decided greedily; the
        prose reply's verdict when it was felt.

        Why: a 0.5B model shown many tools calls one when it should not (offered Open WebUI's
        36 built-in tools, it answered "我是不是太没用了？" with a call to ask_user and arguments
        that made no sense), and its prose on the tools prompt had no tone and no guards. So
        the probability that the reply opens with a tool call is read first. At CALL_CHANCE or
        more the reply is a call, bound by the tools' grammar (a tool that exists, valid JSON);
        below it, the role answers in prose as in a plain chat (felt first when the role is
        steered: its tone, its guards; without the tools block), and the tools prompt's tokens
        count in its usage too. A model whose template cannot show tools answers in prose.
        Either way the decision is logged and left on the reply's `note` (the server sends it
        as a header).
        """
        offered = f"{len(tools)} tools offered"
        if not self.engine.supports_tools:
            verdict, reply = self._prose(role, text, history, sampling, framing)
            reply.note = f"{offered}; prose (this model's chat template cannot show tools)"
            log.info("tools request: %s", reply.note)
            return verdict, reply
        defaults = {"stop": (), "max_tokens": PLAIN_MAX_TOKENS, "repeat_penalty": 1.0}
        settings, _, _ = reply_settings(role, defaults, self.settings.seed)
        system = framing.system(role.system_prompt(None))
        prompt = tools_prompt(self.prompts, role, system, text, history, tools, settings, framing)
        chance, cached = self.engine.opening_probability(prompt, CALL_OPENINGS)
        verdict = None
        if chance >= CALL_CHANCE:
            reply = self.plain(role, text, history, None, tools, "required", sampling, framing)
            reply.note = f"{offered}; call (p(call)={chance:.2f})"
        else:
            verdict, reply = self._prose(role, text, history, sampling, framing)
            reply.counts(len(prompt.tokens), cached)
            reply.note = f"{offered}; prose (p(call)={chance:.2f})"
        log.info("tools request: %s", reply.note)
        return verdict, reply

    def _prose(
        self,
        role: Role,
        text: str,
        history: Sequence[Turn],
        sampling: dict[str, object],
        framing: Framing,
    ) -> tuple[Verdict | None, Completion]:
        """The role's plain chat reply: felt first (its tone, its guards) when it is steered."""
        if role.steered_by:
            return self.respond(text, history, role.name, sampling, framing)
        return None, self.toned(role, text, history, None, 1.0, (), sampling, framing)


def _require_text_role(role: Role) -> None:
    if role.is_classifier:
        raise InputError(f"Role {role.name!r} answers with labels; use classify() for it.")


def reply_settings(
    role: Role, overrides: dict[str, object], seed: int | None
) -> tuple[Sampling, int, Drafts]:
    """The role's generation settings with the caller's overrides, its `no_copy` and its
    drafts (settings of the reply, not of one sampler); `seed` when the caller gave none (and
    None: a fresh one per reply)."""
    settings = role.generation.model_dump()
    unknown = set(overrides) - set(settings) - CALLER_OPTIONS
    if unknown:
        raise InputError(f"Unknown sampling option(s): {', '.join(sorted(unknown))}.")
    settings.update({key: value for key, value in overrides.items() if value is not None})
    if settings.get("seed") is None:  # no seed given: a fresh one per reply
        settings["seed"] = seed if seed is not None else time.time_ns() % 2**31
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


def guards(
    engine: EngineLike,
    role: Role,
    tone: str | None,
    confidence: float,
    said: Sequence[str],
    not_copied: Sequence[str],
    no_copy: int,
) -> tuple[tuple[int, ...], ...]:
    """The token sequences a reply in `tone` never writes: the tone's words (every tone's
    when `tone` is None), grave words nobody `said`, and every `no_copy`-token run of the
    `not_copied` texts."""
    avoided = role.avoided(tone, confidence) + role.unsaid(said)
    banned = list(engine.phrase_tokens(avoided))
    for source in not_copied:
        banned += copy_runs(engine.tokenize(source), no_copy)
    return tuple(banned)


def tools_prompt(
    prompts: PromptBuilder,
    role: Role,
    system: str,
    text: str,
    history: Sequence[Turn],
    tools: Sequence[Tool],
    settings: Sampling,
    framing: Framing,
    start: str = "",
) -> Prompt:
    """The system turn with the tools block (the template puts it there, so it is part of the
    cached prefix: decoded once per tools block), then the history and the message."""
    return prompts.fit_history(
        role,
        [{"role": "system", "content": system}],
        1,
        require_text(text),
        list(history),
        settings,
        tools=[tool.spec() for tool in tools],
        reply_start=start,
        truncation=framing.truncation,
    )
