"""llama-cpp-python's low-level side, in one place: contexts, batches, sequence KV, samplers.

Why one module: the high-level `Llama` object loads the model and decodes one sequence, but the
engine needs more than it offers (a second context over the same weights with one KV stream per
sequence, a sequence's KV saved and restored, a batch filled row by row, logits read from any row
of a decode, an eval callback installed at load). Those go through llama-cpp-python's ctypes
bindings and a few of its private attributes (`_model`, `_ctx`, `_internals`), which may change
between its versions. Kept here behind a small named surface, a new llama-cpp-python release is
one module to check, and the rest of `app/llm` reads as plain Python.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp._internals import LlamaSampler

from app.llm.decode_thread import on_decode_thread

# -- loading ---------------------------------------------------------------------------------

_PARAMS_LOCK = threading.Lock()


@contextmanager
def load_params(*, extra_buffers: bool, eval_callback: object) -> Iterator[None]:
    """Load with extra CPU weight buffers on or off, and with an eval callback installed.

    Why extra buffers are off by default: on Xeons that report AMX, llama.cpp's AMX kernels
    segfault inside some virtual machines (seen here with llama-cpp-python 0.3.36), and the whole
    process dies with no error to catch. `Llama()` has no keyword for this model parameter nor
    for the context's `cb_eval` (see app/llm/hidden.py), so the default parameters are patched
    for the duration of the load only, under a lock.
    """
    module = llama_cpp.llama_cpp
    model_defaults, context_defaults = (
        module.llama_model_default_params,
        module.llama_context_default_params,
    )

    def model_params() -> llama_cpp.llama_model_params:
        chosen = model_defaults()
        chosen.use_extra_bufts = extra_buffers
        return chosen

    def context_params() -> llama_cpp.llama_context_params:
        chosen = context_defaults()
        chosen.cb_eval = eval_callback
        return chosen

    with _PARAMS_LOCK:
        module.llama_model_default_params = model_params
        module.llama_context_default_params = context_params
        try:
            yield
        finally:
            module.llama_model_default_params = model_defaults
            module.llama_context_default_params = context_defaults


def eval_callback(function: object) -> object:
    """A Python function wrapped as llama.cpp's `cb_eval`; keep the result alive as long as
    the context that calls it."""
    return llama_cpp.llama_cpp.ggml_backend_sched_eval_callback(function)


def layer_count(llm: Llama) -> int:
    return llama_cpp.llama_model_n_layer(llm._model.model)


# -- tokens ----------------------------------------------------------------------------------


class Vocab:
    """The model's vocabulary: token bytes and what kind of token it is."""

    def __init__(self, llm: Llama) -> None:
        self._llm = llm
        self._vocab = llm._model.vocab
        self._buffer = ctypes.create_string_buffer(64)
        self._enders: tuple[int, ...] | None = None

    def piece(self, token: int) -> bytes:
        """The raw bytes of one token (control tokens give none); may be part of a character."""
        size = llama_cpp.llama_token_to_piece(self._vocab, token, self._buffer, 64, 0, False)
        if size < 0:  # buffer too small: retry with the size llama.cpp asked for
            bigger = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, bigger, -size, 0, False)
            return bigger.raw[:size]
        return self._buffer.raw[:size]

    def text(self, token: int) -> str:
        """A token's text as the vocabulary spells it (control tokens included)."""
        return "" if token < 0 else self._llm._model.token_get_text(token)

    def ends_reply(self, token: int) -> bool:
        """End of generation or a control token (a role marker): never shown, ends the reply."""
        return self.is_end_of_generation(token) or self.is_control(token)

    def enders(self) -> tuple[int, ...]:
        """Every token that `ends_reply` (found once, a scan of the vocabulary: ~0.1 s)."""
        if self._enders is None:
            count = llama_cpp.llama_vocab_n_tokens(self._vocab)
            self._enders = tuple(t for t in range(count) if self.ends_reply(t))
        return self._enders

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def is_control(self, token: int) -> bool:
        """A template marker such as <|im_start|>: user text must never produce one."""
        return bool(llama_cpp.llama_vocab_is_control(self._vocab, token))


# -- contexts, batches and sequence KV ---------------------------------------------------------


class Batch:
    """A llama.cpp batch of up to `size` tokens, filled row by row."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.handle = llama_cpp.llama_batch_init(size, 0, 1)

    def put(self, index: int, token: int, position: int, seq: int, output: bool) -> None:
        """Row `index`: one token of one sequence, with or without its logits."""
        batch = self.handle
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = output

    def free(self) -> None:
        if self.handle is not None:
            llama_cpp.llama_batch_free(self.handle)
            self.handle = None


StateBuffer = ctypes.Array  # a sequence's saved KV, ready to be restored without a copy


def state_buffer(state: bytes) -> StateBuffer:
    """A saved sequence state as the buffer llama.cpp reads (made once, restored many times)."""
    return (ctypes.c_uint8 * len(state)).from_buffer_copy(state)


class Context:
    """One llama.cpp context: decode batches, read logits, drop or keep sequences' cells,
    save and restore one sequence's KV."""

    def __init__(self, handle: object, n_vocab: int, *, owned: bool) -> None:
        self._handle = handle
        self._memory = llama_cpp.llama_get_memory(handle)
        self._owned = owned
        self.n_vocab = n_vocab

    @classmethod
    def of(cls, llm: Llama) -> Context:
        """The context `Llama` made at load (it stays `Llama`'s to free)."""
        return cls(llm._ctx.ctx, llm.n_vocab(), owned=False)

    @classmethod
    def beside(
        cls,
        llm: Llama,
        *,
        n_ctx: int,
        sequences: int,
        n_batch: int | None = None,
        watch_layers: bool = True,
    ) -> Context:
        """A second context over the same loaded weights with one KV stream per sequence
        (`kv_unified` off), its other parameters (threads, batch, callback) as `llm`'s own;
        `watch_layers=False` drops the eval callback (no layer reads there)."""
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx
        params.n_seq_max = sequences
        params.kv_unified = False
        if n_batch is not None:
            params.n_batch = params.n_ubatch = n_batch
        if not watch_layers:
            params.cb_eval = llama_cpp.llama_cpp.ggml_backend_sched_eval_callback()
        handle = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not handle:
            raise MemoryError("llama.cpp could not create a second context for this model")
        return cls(handle, llm.n_vocab(), owned=True)

    def decode(self, batch: Batch, n_tokens: int) -> None:
        """Decode the batch's first `n_tokens` rows (on the decoding thread: see
        app/llm/decode_thread.py)."""
        batch.handle.n_tokens = n_tokens
        status = on_decode_thread(llama_cpp.llama_decode, self._handle, batch.handle)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def logits(self, row: int) -> np.ndarray:
        """The logits of a batch row of the last decode (-1: the last row); a view that the
        next decode overwrites, and that a sampler reading this row sees edited."""
        pointer = llama_cpp.llama_get_logits_ith(self._handle, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def remove(self, seq: int, start: int = -1, end: int = -1) -> None:
        """Drop the cells of sequence `seq` from position `start` to `end` (-1: open)."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq, start, end)

    def save(self, seq: int) -> bytes:
        """Sequence `seq`'s KV state (its cells only: a few hundred KB for a role prefix)."""
        size = llama_cpp.llama_state_seq_get_size(self._handle, seq)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self._handle, buffer, size, seq)
        return bytes(buffer[:written])

    def restore(self, seq: int, state: bytes | StateBuffer) -> bool:
        """Load a saved state into sequence `seq`; False if llama.cpp refused it."""
        buffer = state_buffer(state) if isinstance(state, bytes) else state
        return llama_cpp.llama_state_seq_set_data(self._handle, buffer, len(buffer), seq) == len(
            buffer
        )

    def sample(self, sampler: Sampler, row: int) -> int:
        return sampler.sample(self._handle, row)

    def close(self) -> None:
        if self._owned and self._handle:
            llama_cpp.llama_free(self._handle)
        self._handle = None


# -- samplers --------------------------------------------------------------------------------


class Sampler:
    """A llama.cpp sampler chain, built step by step (the order is the order they run)."""

    def __init__(self) -> None:
        self._chain = LlamaSampler()

    def grammar(self, llm: Llama, gbnf: str) -> Sampler:
        """Allow only what a GBNF grammar allows; a grammar llama.cpp cannot parse raises
        ValueError."""
        grammar = llama_cpp.llama_sampler_init_grammar(
            llm._model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not grammar:
            raise ValueError("llama.cpp could not parse the grammar")
        llama_cpp.llama_sampler_chain_add(self._chain.sampler, grammar)
        return self

    def checked_grammar(self, llm: Llama, gbnf: str) -> Sampler:
        """The grammar through llama-cpp-python's own parser (`LlamaGrammar`), as its
        high-level API applies it: the reference a faster path is checked against."""
        self._chain.add_grammar(llm._model, LlamaGrammar.from_string(gbnf, verbose=False))
        return self

    def greedy(self) -> Sampler:
        self._chain.add_greedy()
        return self

    def random(self, *, top_k: int, top_p: float, temperature: float, seed: int) -> Sampler:
        if top_k > 0:
            self._chain.add_top_k(top_k)
        self._chain.add_top_p(top_p, 1)
        self._chain.add_temp(temperature)
        self._chain.add_dist(seed)
        return self

    def sample(self, context_handle: object, row: int) -> int:
        return llama_cpp.llama_sampler_sample(self._chain.sampler, context_handle, row)


# -- ggml tensors, for the eval callback -------------------------------------------------------

_GGML = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
_GGML.ggml_get_name.restype = ctypes.c_char_p
_GGML.ggml_get_name.argtypes = [ctypes.c_void_p]
_GGML.ggml_nelements.restype = ctypes.c_int64
_GGML.ggml_nelements.argtypes = [ctypes.c_void_p]
_GGML.ggml_nbytes.restype = ctypes.c_size_t
_GGML.ggml_nbytes.argtypes = [ctypes.c_void_p]
_GGML.ggml_backend_tensor_get.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
]


def tensor_name(tensor: int) -> bytes:
    return _GGML.ggml_get_name(tensor)


def tensor_floats(tensor: int) -> np.ndarray | None:
    """A computed tensor's values, if it is float32 (layer outputs are, on CPU); else None."""
    count = _GGML.ggml_nelements(tensor)
    if _GGML.ggml_nbytes(tensor) != count * 4:
        return None
    data = np.empty(count, dtype=np.float32)
    _GGML.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, count * 4)
    return data
