"""Loading a GGUF: check the file first, so a wrong path or a truncated download is one clear
error that says what to do, never a llama.cpp assertion."""

from __future__ import annotations

from pathlib import Path

from llama_cpp import Llama

from app.errors import ModelLoadError, ModelNotFound
from app.llm.native import load_params


def load_model(
    path: Path,
    *,
    n_ctx: int,
    n_threads: int,
    n_batch: int,
    extra_buffers: bool,
    eval_callback: object,
    verbose: bool,
) -> Llama:
    """The model, mmapped, with one context of `n_ctx` cells and the eval callback installed."""
    check_gguf_file(path)
    try:
        with load_params(extra_buffers=extra_buffers, eval_callback=eval_callback):
            return Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=min(n_batch, n_ctx),
                logits_all=False,
                use_mmap=True,
                verbose=verbose,
            )
    except (ValueError, RuntimeError, OSError) as error:
        raise ModelLoadError(
            f"llama.cpp could not load {path} ({error}). The file may be truncated "
            "or corrupt: delete it and download it again (allinone download)."
        ) from None


def read_model_name(path: Path) -> str:
    """The name a loaded model will have (heads are keyed by it), reading only the vocabulary
    and metadata, not the weights."""
    check_gguf_file(path)
    try:
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as error:
        raise ModelLoadError(f"llama.cpp could not read {path} ({error}).") from None
    try:
        return model_name(llm.metadata, path)
    finally:
        llm.close()


def model_name(metadata: dict[str, str], path: Path) -> str:
    return metadata.get("general.name") or path.stem


def check_gguf_file(path: Path) -> None:
    if not path.is_file():
        raise ModelNotFound(f"Model file not found: {path}. Run: allinone download")
    with path.open("rb") as file:
        magic = file.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF model (it does not start with 'GGUF'). Give a .gguf file, "
            "or download one: allinone download"
        )
