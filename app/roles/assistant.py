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

The class is a facade: each job is done by one part, in a module of its own (prompting,
labelling, replying, bank_cache, embedding), all on the same engine and roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from app.config import Settings, load_settings
from app.llm import Completion, Engine, Prompt
from app.models import resolve_model_path
from app.roles.bank_cache import BankCache
from app.roles.conversations import Conversations
from app.roles.embedding import Embedder
from app.roles.engine_like import EngineLike
from app.roles.head import Head, check_fits
from app.roles.json_output import JsonFormat
from app.roles.labelling import Decode, Labeller, Verdict, head_verdict
from app.roles.prompting import Framing, PromptBuilder, Truncation, Turn
from app.roles.prompts import Role, RoleBook, load_roles
from app.roles.replying import Replier
from app.roles.store import open_store
from app.roles.tools import Tool
from app.roles.user_heads import with_user_heads

# What other code imports from here: the API's types live with the part that makes them.
__all__ = ["Assistant", "Decode", "EngineLike", "Turn", "Verdict", "head_verdict"]


class Assistant:
    """One model, many jobs."""

    def __init__(self, engine: EngineLike, roles: RoleBook, settings: Settings | None = None):
        self.roles = roles
        self.settings = settings or load_settings()
        self.prompt_builder = PromptBuilder(engine)
        self.labeller = Labeller(engine, roles, self.prompt_builder)
        self.bank_cache = BankCache(
            engine, roles, self.settings, self.prompt_builder, self.labeller
        )
        self.replier = Replier(
            engine, roles, self.settings, self.prompt_builder, self.labeller, self.bank_cache
        )
        self.embedder = Embedder(engine)
        self._engine = engine
        self._conversations: Conversations | None = None

    @property
    def engine(self) -> EngineLike:
        return self._engine

    @engine.setter
    def engine(self, engine: EngineLike) -> None:
        """Every part works on the same engine, so swapping it (a test's smaller context)
        swaps it under all of them."""
        self._engine = engine
        for part in (
            self.prompt_builder,
            self.labeller,
            self.bank_cache,
            self.replier,
            self.embedder,
        ):
            part.engine = engine

    @classmethod
    def load(
        cls, model: str | Path | None = None, *, heads: bool = True, **overrides: object
    ) -> Assistant:
        """Load settings (defaults < env < arguments), the roles and the model, once.

        `heads=False` leaves the learned heads out (`allinone train-head` trains new ones).
        A role whose shipped head belongs to another model takes the head this machine
        trained for the loaded model, if there is one (app/roles/user_heads.py).
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
        return self.labeller.classify(text, role, decode=decode)

    def classify_many(
        self, texts: Iterable[str], role: str | None = None, *, window: int = 512
    ) -> Iterator[Verdict]:
        """`classify` for each text, in order, `window` texts per engine call.

        The engine decodes texts of equal token length together (the same verdicts, fewer
        llama.cpp calls); a bad text raises before any text of its window is decoded.
        """
        return self.labeller.classify_many(texts, role, window=window)

    def head_for(self, role: Role) -> Head | None:
        """The role's learned head, if it was trained on the loaded model (else: label logits)."""
        return self.labeller.head_for(role)

    def prompt_for(self, role: Role, text: str) -> Prompt:
        """A label role's prompt for `text`, as classify builds it."""
        return self.prompt_builder.prompt_for(role, text)

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
        instructions: str | None = None,
        truncation: Truncation = "auto",
        **sampling: object,
    ) -> Completion:
        """Stream the reply of a text role (default: the chat role) to `text` after `history`.

        `tone` is a label of the role's `steered_by` role (e.g. 负面) and adds its tone
        instruction. Old turns are dropped, oldest first, to keep the prompt inside the context.
        `json_format` makes the reply one JSON value of that format (decoded under its grammar);
        `tools` lets the model call functions: `tool_choice` "auto" (it decides), "required"
        (one call, grammar-bound), a tool's name (a call to it) or "none".
        Read `split_tool_calls(reply.text(), tools)` for the calls (app/roles/tools.py).
        `instructions` are the caller's own, added after the role's system prompt (never
        instead of it); `truncation="disabled"` refuses a conversation that does not fit rather
        than dropping its oldest turns.
        """
        chosen = self.roles.get(role or self.roles.defaults.chat)
        framing = Framing(instructions, truncation)
        if tone is not None and json_format is None and not tools:
            return self.replier.toned(chosen, text, history, tone, 1.0, (), sampling, framing)
        return self.answer(
            text,
            history,
            role=role,
            steer=False,
            json_format=json_format,
            tools=tools,
            tool_choice=tool_choice,
            instructions=instructions,
            truncation=truncation,
            **sampling,
        )[1]

    def answer(
        self,
        text: str,
        history: Sequence[Turn] = (),
        *,
        role: str | None = None,
        steer: bool = True,
        json_format: JsonFormat | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: str = "auto",
        instructions: str | None = None,
        truncation: Truncation = "auto",
        **sampling: object,
    ) -> tuple[Verdict | None, Completion]:
        """The reply every front end gives (the server's endpoints, the CLI, the chat page):
        the mood verdict (None when the reply was not felt) and the streamed reply.

        A steered role (the chat) feels the message first and replies in the tone it picks, as
        `respond` does, also when the request offers tools and the model answers in prose.
        Only JSON output and a tool call skip the mood step and the guards. `steer=False`
        (the CLI's --no-sentiment) skips the mood step, never the guards. The other options
        are `reply`'s."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        return self.replier.answer(
            chosen,
            text,
            history,
            sampling,
            Framing(instructions, truncation),
            steer=steer,
            json_format=json_format,
            tools=() if tool_choice == "none" else tools,
            tool_choice=tool_choice,
        )

    def respond(
        self,
        text: str,
        history: Sequence[Turn] = (),
        *,
        role: str | None = None,
        instructions: str | None = None,
        truncation: Truncation = "auto",
        **sampling: object,
    ) -> tuple[Verdict, Completion]:
        """Feel, then reply: the steering role's verdict on `text` picks the reply's tone (its
        instruction and the words it avoids), and, when the role has an example bank, the
        exchanges of the group nearest to `text` become the few-shot turns (found with the
        states the verdict's decode produced anyway). A message nearest a group whose mood the
        steering role has no label for (中性 questions) takes that group's tone instead.
        In a conversation the opening message's tone and turns stay at the prompt's start (so
        the earlier turns' KV is reused); a later message of another mood gets its tone as a
        note just before it. `instructions` and `truncation` as for `reply`."""
        framing = Framing(instructions, truncation)
        return self.replier.respond(text, history, role, sampling, framing)

    def prepare_bank(
        self,
        role: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        prefixes: bool = True,
    ) -> None:
        """Read the role's example bank into vectors and, with `prefixes`, decode each group's
        prompt prefix, once per model (both kept on disk under `settings.cache_dir`: later
        loads take milliseconds). `respond` reads the vectors on first use and decodes a
        group's prefix the first time the group is answered; call this first to show
        `progress(done, total)`, or to have every group ready (a benchmark). A role without a
        bank: nothing to do."""
        self.bank_cache.prepare(role, progress, prefixes=prefixes)

    # -- kept conversations --------------------------------------------------------------

    def conversations(self) -> Conversations:
        """The conversations kept in the store (`settings.store`, pruned by `keep_days`):
        list, open, continue (`say`), rename, export and delete them
        (app/roles/conversations.py). The CLI's `--session`, the chat page and the Responses
        API keep theirs in the same file."""
        if self._conversations is None:
            self._conversations = Conversations(self, open_store(self.settings))
        return self._conversations

    # -- embeddings and any role ---------------------------------------------------------

    def embed(self, texts: str | Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text (shape (len(texts), n_embd)): the mean hidden state
        over the text's tokens of the middle layers a head reads (app/roles/head.py), averaged.
        Texts that mean alike are close by cosine; the same model, no second one loaded."""
        return self.embedder.embed(texts)

    def run(self, role: str, text: str) -> Verdict | Iterator[str]:
        """Any role by name: a Verdict for label roles, a text stream for text roles."""
        chosen = self.roles.get(role)
        return (
            self.classify(text, chosen.name)
            if chosen.is_classifier
            else self.reply(text, role=chosen.name)
        )
