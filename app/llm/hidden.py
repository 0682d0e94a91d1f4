"""Read a middle layer's hidden states while llama.cpp decodes, for a learned head.

Why: a linear probe on a middle layer of the 0.5B model separates positive from negative
reviews better than one on the final logits (cross-validated on reviews_train.csv: 0.86 vs 0.83).
llama-cpp-python exposes only the last layer, so we hook llama.cpp's eval callback (`cb_eval`,
a context parameter): the scheduler asks it, for every graph node, whether it wants to see that
tensor, and hands over the ones it asked for once they are computed. Each layer's output is a
node named `l_out-N`. When nothing is being watched the callback answers "no" at once, so chat
and generation run at full speed (measured: 26.3 vs 26.3 tokens/s).

Early exit: a role decided by its head needs nothing above the head's deepest layer. Watched
with `stop=True`, the callback answers "stop" once that layer's output is copied; on CPU the
graph is one split, so llama.cpp skips the remaining layers and the output projection and
`llama_decode` still returns 0 (1.3x faster on the list path). The logits and the upper layers'
KV of such a pass are stale: `cut_short` tells the engine, which never reads them.

One catch: the callback is Python code running inside llama_decode, and Python runs signal
handlers wherever its main thread happens to be. A Ctrl-C landing mid-decode would raise
KeyboardInterrupt inside the callback, where ctypes swallows it. So the engine decodes inside
`deferred_signals()`: SIGINT / SIGTERM are only noted during the decode and handed to their
real handlers right after it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from app.llm.native import eval_callback, tensor_floats, tensor_name


class LayerTap:
    """Collects the outputs of chosen layers during the decodes run inside `watch()`."""

    def __init__(self) -> None:
        self._wanted: dict[bytes, int] = {}  # tensor name -> index in the layers asked for
        self._rows: list[list[np.ndarray]] = []
        self._last: bytes | None = None  # stop the pass after this tensor (early exit)
        self.cut_short = False  # the last watched pass stopped early: its logits are stale
        # Kept on the instance: llama.cpp holds a raw pointer to it for the context's lifetime.
        self.callback = eval_callback(self.on_tensor)

    @contextmanager
    def watch(self, layers: Sequence[int], *, stop: bool = False) -> Iterator[None]:
        """Within the block, every decoded token's output of each layer is kept, in order.

        With `stop`, each pass ends right after the deepest of `layers` (early exit).
        """
        self._rows = [[] for _ in layers]
        self._wanted = {f"l_out-{layer}".encode(): index for index, layer in enumerate(layers)}
        self._last = f"l_out-{max(layers)}".encode() if stop and layers else None
        self.cut_short = False
        try:
            yield
        finally:
            self._wanted = {}
            self._last = None

    def pooled(self, n_embd: int) -> np.ndarray:
        """Per watched layer: [last token's state, mean state over the watched tokens]."""
        rows = sum(len(chunk) for chunk in self._rows[0]) // n_embd if self._rows else 0
        return self.pooled_each(n_embd, [rows])[0]

    def pooled_each(self, n_embd: int, lengths: Sequence[int]) -> np.ndarray:
        """`pooled` for sequences decoded one after another in the batch, each padded to the
        longest: sequence i is `lengths[i]` real tokens, then padding, which comes after the text
        and so never touches its states.

        Shape (len(lengths), layers, 2 * n_embd).
        """
        out = np.empty((len(lengths), len(self._rows), 2 * n_embd), dtype=np.float32)
        for index, chunks in enumerate(self._rows):
            if not chunks:
                raise ValueError(f"layer #{index} asked for was never computed by llama.cpp")
            states = np.concatenate(chunks).reshape(len(lengths), -1, n_embd)
            for seq, length in enumerate(lengths):
                text = states[seq, :length]
                out[seq, index, :n_embd] = text[-1]
                out[seq, index, n_embd:] = text.mean(axis=0)
        return out

    def on_tensor(self, tensor: int, ask: bool, _user_data: int) -> bool:
        if not self._wanted:
            return not ask  # "no" to every question; "go on" after a tensor (never reached)
        try:
            name = tensor_name(tensor)
            index = self._wanted.get(name)
            if ask:
                return index is not None
            if index is not None:
                data = tensor_floats(tensor)
                if data is not None:
                    self._rows[index].append(data)
            if name == self._last:  # early exit: "stop" ends this graph's computation here
                self.cut_short = True
                return False
        except Exception:  # noqa: BLE001 - an exception must never cross into llama.cpp
            return not ask
        return True


_DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then give them to their handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers only ever run in the main thread
        return
    caught: list[int] = []
    originals = {number: signal.getsignal(number) for number in _DEFERRED}
    for number, handler in originals.items():
        if handler is not None:  # None: installed outside Python; leave it alone
            signal.signal(number, lambda received, _frame: caught.append(received))
    try:
        yield
    finally:
        for number, handler in originals.items():
            if handler is not None:
                signal.signal(number, handler)
        for number in caught:
            handler = originals[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)
