"""Guards: token sequences a reply must never produce, enforced while it is generated.

Why: a 0.5B model follows a system prompt loosely. Told "the user is sad", it may still
write "恭喜" or "太棒了"; asked "我是不是很没用", it may answer "是的"; and it likes to echo
the user's own words back (pronouns flipped) or copy a few-shot example word for word. Rules
in the prompt do not stop that; removing the offending continuation from the choices does, at
no cost to speed.

A `Ban` holds token sequences. Before each token is sampled, every sequence whose first n-1
tokens are the last n-1 tokens generated has its n-th token removed (logit set to -inf); a
one-token sequence is never allowed. The dispatcher builds the sequences from the role's YAML
(per-tone `avoid` words, every token of the vocabulary that contains one of them included) and
from the text the reply must not copy (the user's message, the few-shot turns shown):
`copy_runs` cuts it into overlapping runs of n tokens, so no n-token run of it comes back.
The engine adds the reply's own runs as it writes them, so no run comes twice (no loops such
as "一步一步来，一步一步来，...", seen at low temperature).
The catch: a ban is on tokens, so the same words tokenized another way slip through. The
measured checks in app/measure/chat_quality.py look at the text itself, and they are what we report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Ban:
    """Token sequences that generation must not complete."""

    def __init__(self, sequences: Iterable[Sequence[int]] = ()) -> None:
        self.always: set[int] = set()  # one-token sequences: banned at every step
        self._next: dict[tuple[int, ...], set[int]] = {}  # last n-1 tokens -> banned n-th
        self._lengths: set[int] = set()
        for sequence in sequences:
            self.add(sequence)

    def add(self, sequence: Sequence[int]) -> None:
        """Ban one more sequence (e.g. a run the reply itself just wrote: no loops)."""
        tokens = tuple(sequence)
        if not tokens:
            return
        if len(tokens) == 1:
            self.always.add(tokens[0])
            return
        self._next.setdefault(tokens[:-1], set()).add(tokens[-1])
        self._lengths.add(len(tokens) - 1)

    def __bool__(self) -> bool:
        return bool(self.always or self._next)

    def banned_after(self, generated: Sequence[int]) -> set[int]:
        """The tokens that may not come next after `generated`."""
        banned = set(self.always)
        for length in self._lengths:
            if length <= len(generated):
                banned |= self._next.get(tuple(generated[len(generated) - length :]), set())
        return banned


def copy_runs(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """Every run of `n` consecutive tokens of `tokens` (none if it is shorter, or n < 2)."""
    if n < 2:
        return []
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
