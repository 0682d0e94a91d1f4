"""The example banks, made ready for replies once per model and kept on disk.

Why: reading a bank's ~180 exchanges into vectors takes about a minute on 2 cores, and each of
its groups' prompt prefixes (the turns shown for that group) a decode of its own. Both depend
only on the model, the bank, the steering role's prompt and the layers read, so both are kept
under `settings.cache_dir` and later loads take milliseconds (app/roles/bank.py says why the
shots go by group). A reply then restores its group's prefix from disk instead of decoding it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.atomic import atomic_open
from app.config import Settings
from app.llm import Prompt
from app.roles.bank import ExampleBank
from app.roles.engine_like import EngineLike
from app.roles.head import default_layers, features
from app.roles.labelling import Labeller
from app.roles.prompting import PromptBuilder
from app.roles.prompts import Role, RoleBook

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class BankCache:
    """Each text role's bank vectors and group prefixes: computed once, then read from disk."""

    def __init__(
        self,
        engine: EngineLike,
        roles: RoleBook,
        settings: Settings,
        prompts: PromptBuilder,
        labeller: Labeller,
    ) -> None:
        self.engine = engine
        self.roles = roles
        self.settings = settings
        self.prompts = prompts
        self.labeller = labeller
        self._ready: set[str] = set()  # text roles whose bank prepare has read

    def prepare(self, role: str | None = None, progress: Progress | None = None) -> None:
        """Read the role's example bank into vectors and decode each group's prompt prefix,
        once per model (a role without a bank: nothing to do). `progress(done, total)`."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        bank = self.roles.banks.get(chosen.name)
        if bank is None or chosen.bank is None or chosen.name in self._ready:
            return
        steering = self.labeller.label_role(self.roles.steering(chosen).name)
        layers = self.layers(steering)
        if not bank.indexed:
            self._index(chosen, bank, steering, layers, progress)
        # Each group's prompt prefix, decoded once per model and kept on disk.
        groups = bank.groups(chosen.bank.k)
        for done, shots in enumerate(groups, start=1):
            self._keep_prefix(self.prompts.group_prompt(chosen, shots))
            if progress:
                progress(len(bank.exchanges) + done, len(bank.exchanges) + len(groups))
        self._ready.add(chosen.name)

    def layers(self, steering: Role) -> tuple[int, ...]:
        """The layers a message is compared by: the steering role's head's, when it is in use
        (no extra work: the verdict reads them anyway), else those a new head would read."""
        head = self.labeller.head_for(steering)
        if head is not None:
            return head.layers
        return default_layers(self.engine.n_layer)

    def offer_kept_prefix(self, prompt: Prompt) -> None:
        """Give the engine `prompt`'s group prefix from disk, unless it holds it already."""
        if self.engine.holds_prefix(prompt):
            return
        kept = self._prefix_file(prompt)
        if kept.is_file():
            self.engine.offer_prefix_state(prompt, kept.read_bytes())

    def _index(
        self,
        role: Role,
        bank: ExampleBank,
        steering: Role,
        layers: tuple[int, ...],
        progress: Progress | None,
    ) -> None:
        """The bank's vectors: `steering`'s pooled states of `layers` for each exchange's input,
        read from the cache file when an earlier run wrote it."""
        key = bank.cache_key(self.engine.model_name, steering.fingerprint(), layers)
        cache = self.settings.cache_dir / "banks" / f"{role.name}-{key}.npy"

        def embed(texts: Sequence[str]) -> np.ndarray:
            if not cache.is_file():
                log.warning(
                    "Reading the %s role's example bank (%d exchanges) once for %r: about a "
                    "minute.",
                    role.name,
                    len(texts),
                    self.engine.model_name,
                )
            rows = []
            for done, text in enumerate(texts, start=1):
                rows.append(features(self.labeller.judge(text, steering, layers=layers)[1]))
                if progress:
                    progress(done, len(texts))
            return np.stack(rows)

        bank.index(embed, cache)

    def _keep_prefix(self, prompt: Prompt) -> None:
        """Decode a group's prompt prefix once per model and keep its KV state on disk."""
        kept = self._prefix_file(prompt)
        if not kept.is_file():
            kept.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(kept, "wb") as out:
                out.write(self.engine.prefix_state(prompt))

    def _prefix_file(self, prompt: Prompt) -> Path:
        """Where a prefix's KV state is kept: named by the model and the prefix's tokens."""
        tokens = ",".join(map(str, prompt.tokens[: prompt.prefix_len]))
        digest = hashlib.sha256(f"{self.engine.model_name}|{tokens}".encode()).hexdigest()[:24]
        return self.settings.cache_dir / "prefixes" / f"{digest}.kv"
