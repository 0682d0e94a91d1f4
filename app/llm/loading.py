"""Loading a GGUF: check the file first, so a wrong path or a truncated download is one clear
error that says what to do, never a llama.cpp assertion; llama.cpp's own log is routed through
`logging` before anything loads (app.llm.native_log), and what it said about a refused file goes
into that one line."""

from __future__ import annotations

from pathlib import Path

from llama_cpp import Llama

from app.errors import ModelLoadError, ModelNotFound
from app.llm.native import load_params
from app.llm.native_log import errors_logged
from app.llm.native_log import install as install_llama_log


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
    install_llama_log(show=verbose)
    check_gguf_file(path)
    with errors_logged() as logged:
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
                f"llama.cpp could not load {path} ({_reason(logged, error)}). The file may be "
                "truncated or corrupt: delete it and download it again (allinone download)."
            ) from None


def read_model_name(path: Path, *, verbose: bool = False) -> str:
    """The name a loaded model will have (heads are keyed by it), reading only the vocabulary
    and metadata, not the weights."""
    install_llama_log(show=verbose)
    check_gguf_file(path)
    with errors_logged() as logged:
        try:
            llm = Llama(model_path=str(path), vocab_only=True, verbose=verbose)
        except (ValueError, RuntimeError, OSError) as error:
            raise ModelLoadError(
                f"llama.cpp could not read {path} ({_reason(logged, error)}). The file may be "
                "truncated or corrupt: delete it and download it again (allinone download)."
            ) from None
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


def _reason(logged: list[str], error: Exception) -> str:
    """llama.cpp's first error line of the load (the cause; the later ones only say that loading
    failed), without its function name; else the exception's own words."""
    if not logged:
        return str(error)
    _function, _colon, words = logged[0].partition(": ")
    return words or logged[0]
