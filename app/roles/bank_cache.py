"""The example banks, made ready for replies once per model and kept on disk.

Why: a reply's shots come from the bank's vectors (its ~180 exchanges read by the model) and
start with their group's prompt prefix (the turns shown for that group, app/roles/bank.py says
why by group). Both depend only on the model, the bank, the steering role's prompt and the
layers read, so both are kept under `settings.cache_dir` and later loads take milliseconds.

What a first run pays, and when: the vectors are needed by every message (the standardisation
and the nearest exchanges span the whole bank), so they come first. For Qwen2.5-Coder-0.5B
they ship beside the bank (banks/vectors/, 1.3 MB), used only when their key matches exactly;
any other model reads the bank once, several exchanges a llama.cpp call (the list path,
bit-identical to one at a time: ~16 s instead of ~24 s on 2 cores, still too long for a first
chat's 15 s). A group's prefix is needed only by the messages of that group, so each is decoded
the first time one of them is answered and kept on disk then (~1-3 s once, a few MB); decoding
all 36 up front took most of the first chat's minute. Not in the background: the engine has one
lock and a 16-entry prefix cache, so a background decode would hold up a request for a second
and push out the prefixes live requests use (a client's tools block).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from app.atomic import atomic_open
from app.config import Settings
from app.llm import Prompt
from app.roles.bank import ExampleBank
from app.roles.engine_like import EngineLike
from app.roles.head import default_layers, features
from app.roles.labelling import Labeller, windows
from app.roles.prompting import PromptBuilder
from app.roles.prompts import Role, RoleBook

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

# Exchanges read per engine call: large enough to pack texts of close lengths together, small
# enough that a progress bar moves a few times (182 exchanges: 4 calls).
WINDOW = 56


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
        self._groups: dict[str, list[Prompt]] = {}  # text role -> its groups' prompts
        self._group_files: set[Path] = set()  # where those prompts' prefixes are kept
        self._keeping = threading.Lock()  # one writer of a prefix file at a time

    def prepare(
        self, role: str | None = None, progress: Progress | None = None, *, prefixes: bool = False
    ) -> None:
        """Read the role's example bank into vectors, once per model (a role without a bank:
        nothing to do). Each group's prompt prefix then comes on its first reply
        (`offer_kept_prefix`); with `prefixes`, every one missing from disk is decoded now.
        `progress(done, total)` is called only for work really done, never for a cache read."""
        chosen = self.roles.get(role or self.roles.defaults.chat)
        bank = self.roles.banks.get(chosen.name)
        if bank is None or chosen.bank is None:
            return
        read = 0  # exchanges read now (progress of the prefixes counts on after them)
        if chosen.name not in self._groups:
            steering = self.labeller.label_role(self.roles.steering(chosen).name)
            if not bank.indexed:
                read = self._index(chosen, bank, steering, self.layers(steering), progress)
            shown = bank.groups(chosen.bank.k)
            groups = [self.prompts.group_prompt(chosen, shots) for shots in shown]
            self._groups[chosen.name] = groups
            self._group_files.update(map(self._prefix_file, groups))
        if prefixes:
            after = None if progress is None else _after(read, progress)
            self._keep_all(self._groups[chosen.name], after)

    def layers(self, steering: Role) -> tuple[int, ...]:
        """The layers a message is compared by: the steering role's head's, when it is in use
        (no extra work: the verdict reads them anyway), else those a new head would read."""
        head = self.labeller.head_for(steering)
        if head is not None:
            return head.layers
        return default_layers(self.engine.n_layer)

    def vectors(
        self,
        texts: Sequence[str],
        steering: Role,
        layers: tuple[int, ...],
        progress: Progress | None = None,
    ) -> np.ndarray:
        """One row per text: the features of `steering`'s pooled states of `layers`, as the
        mood step reads a message (`Labeller.judge`), several texts a call."""
        head = self.labeller.head_for(steering)
        prompts = [self.prompts.prompt_for(steering, text) for text in texts]
        rows: list[np.ndarray] = []
        if progress:
            progress(0, len(prompts))
        for window in windows(prompts, WINDOW):
            if head is not None:  # as `judge`: the head's layers, the pass stopped after them
                states = self.engine.read_states_many(window, head.layers)
            else:
                chosen = self.engine.choose_many(window, steering.labels, layers=layers)
                states = [pooled for _, pooled in chosen]
            rows += [features(pooled) for pooled in states]
            if progress:
                progress(len(rows), len(prompts))
        return np.stack(rows)

    def offer_kept_prefix(self, prompt: Prompt) -> None:
        """Give the engine `prompt`'s group prefix, unless it holds it already: from disk, or,
        the first time its group is answered with this model, decoded now and kept on disk."""
        if self.engine.holds_prefix(prompt):
            return
        kept = self._prefix_file(prompt)
        if kept.is_file():
            self.engine.offer_prefix_state(prompt, kept.read_bytes())
        elif kept in self._group_files:  # not a prefix of the caller's own instructions
            self._keep(prompt, kept)

    def vector_files(
        self, role: Role, bank: ExampleBank, steering: Role, layers: tuple[int, ...]
    ) -> tuple[Path, Path]:
        """Where the bank's vectors for the loaded model are kept: the user's cache file, and
        the file shipped beside the bank (scripts/ship_bank_vectors.py makes it for the model
        the tests run on; named by the same key, so a change to the bank, the steering role's
        prompt or head, or the model leaves it unused)."""
        key = bank.cache_key(self.engine.model_name, steering.fingerprint(), layers)
        model = re.sub(r"[^a-z0-9.]+", "-", self.engine.model_name.lower()).strip("-")
        return (
            self.settings.cache_dir / "banks" / f"{role.name}-{key}.npy",
            bank.path.parent / "vectors" / f"{bank.path.stem}-{model}-{key}.npy",
        )

    def _index(
        self,
        role: Role,
        bank: ExampleBank,
        steering: Role,
        layers: tuple[int, ...],
        progress: Progress | None,
    ) -> int:
        """The bank's vectors, from the cache file or the shipped one when there is one for
        this key; returns how many exchanges the model read now (0: none)."""
        cache, shipped = self.vector_files(role, bank, steering, layers)
        read = 0

        def embed(texts: Sequence[str]) -> np.ndarray:
            nonlocal read
            read = len(texts)
            log.warning(
                "Reading the %s role's example bank (%d exchanges) once for %r: about 15 s on "
                "2 cores.",
                role.name,
                len(texts),
                self.engine.model_name,
            )
            return self.vectors(texts, steering, layers, progress)

        bank.index(embed, cache, shipped)
        return read

    def _keep_all(self, groups: Sequence[Prompt], progress: Progress | None) -> None:
        """Decode and keep every group prefix not on disk yet."""
        missing = [(prompt, self._prefix_file(prompt)) for prompt in groups]
        missing = [(prompt, kept) for prompt, kept in missing if not kept.is_file()]
        for done, (prompt, kept) in enumerate(missing, start=1):
            self._keep(prompt, kept)
            if progress:
                progress(done, len(missing))

    def _keep(self, prompt: Prompt, kept: Path) -> None:
        """Decode a group's prompt prefix (the engine then holds it) and keep its KV state on
        disk, once: two replies of a new group at the same time write it once."""
        with self._keeping:
            if kept.is_file():
                self.engine.offer_prefix_state(prompt, kept.read_bytes())
                return
            state = self.engine.prefix_state(prompt)
            kept.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(kept, "wb", suffix=f".{os.getpid()}.partial") as out:
                out.write(state)

    def _prefix_file(self, prompt: Prompt) -> Path:
        """Where a prefix's KV state is kept: named by the model and the prefix's tokens."""
        tokens = ",".join(map(str, prompt.tokens[: prompt.prefix_len]))
        digest = hashlib.sha256(f"{self.engine.model_name}|{tokens}".encode()).hexdigest()[:24]
        return self.settings.cache_dir / "prefixes" / f"{digest}.kv"


def _after(base: int, progress: Progress) -> Progress:
    """`progress` counting on after `base` steps already reported (one bar for two stages)."""
    return lambda done, total: progress(base + done, base + total)
