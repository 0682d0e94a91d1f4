"""A user's terminal shows our lines only: llama.cpp's own log is hidden unless --verbose, and a
model llama.cpp refuses is still one line of ours. Real processes on the real model."""

import logging
import re

import httpx
import pytest

from app.errors import ModelLoadError
from app.llm import native_log, read_model_name
from tests.conftest import run_cli
from tests.test_server import start_server

# Every prefix llama.cpp and llama-cpp-python printed with --verbose for these commands (and a
# few more of theirs), collected by running them: a function name and a colon, or loading dots.
LLAMA_LINE = re.compile(
    r"^\s*(~?llama_\w*|llm_load\w*|load_tensors|load|print_info|ggml_\w*|gguf_\w*|clip_\w*"
    r"|create_tensor|graph_reserve|sched_reserve|resolve_fused_ops|init_tokenizer"
    r"|set_abort_callback)\s*:|^\s*\.{3,}\s*$|^(Model metadata|Using gguf chat template|"
    r"Available chat formats)",
    re.MULTILINE,
)
BROKEN = b"GGUF" + b"\xa7\x3c\x91\x0e" + b"garbage, not a model " * 50


def llama_lines(*outputs: str) -> list[str]:
    return [m.group(0) for text in outputs for m in LLAMA_LINE.finditer(text)]


def test_the_pattern_finds_llama_cpp_lines_and_not_ours():
    """The checks below would pass on any output if the pattern found nothing."""
    theirs = (
        "llama_context: n_ctx_seq (512) > n_ctx_train (0) -- possible training context overflow\n"
        "print_info: file type   = Q4_K - Medium\nload_tensors: loading model tensors\n"
        "...............................\n~llama_context:        CPU compute buffer\n"
    )
    ours = "正面\t0.8145\nModel ready: /m/x.gguf\nError: llama.cpp could not load x.gguf (...).\n"
    assert len(llama_lines(theirs)) == 5
    assert llama_lines(ours) == []


@pytest.mark.model
def test_download_chat_and_classify_print_only_our_lines(model_path, tmp_path):
    downloaded = run_cli("download", "--from", str(model_path), "--models-dir", str(tmp_path))
    chatted = run_cli("chat", "--once", "今天又被老板骂了。", "--model", str(model_path))
    classified = run_cli("classify", "这家酒店很干净", "--model", str(model_path))
    for result in (downloaded, chatted, classified):
        assert result.returncode == 0, result.stderr
        assert llama_lines(result.stdout, result.stderr) == [], result.args
    assert downloaded.stdout.splitlines()[-1].startswith("Model ready: ")
    assert classified.stdout.splitlines() == [classified.stdout.strip()]  # one label line


@pytest.mark.model
def test_serve_logs_no_llama_cpp_line(model_path, tmp_path):
    log_path = tmp_path / "serve.log"
    process, base = start_server(model_path, log_path)  # stdout and stderr both go to the log
    try:
        assert httpx.get(base + "/health", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
    log = log_path.read_text(encoding="utf-8")
    assert "Serving " in log
    assert llama_lines(log) == []


@pytest.mark.model
def test_verbose_brings_llama_cpp_lines_back_on_stderr_as_whole_lines(model_path, tmp_path):
    classified = run_cli("classify", "这家酒店很干净", "--model", str(model_path), "--verbose")
    assert classified.returncode == 0, classified.stderr
    lines = llama_lines(classified.stderr)
    assert any(line.startswith("llama_model_loader:") for line in lines)
    assert any(line.startswith("print_info:") for line in lines)
    # llama.cpp sends the loading dots one piece at a time: they arrive joined into one line
    assert any(set(line.strip()) == {"."} for line in lines)
    assert llama_lines(classified.stdout) == []
    downloaded = run_cli(
        "download", "--from", str(model_path), "--models-dir", str(tmp_path), "--verbose"
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert "llama_context: n_ctx_seq (512) > n_ctx_train (0)" in downloaded.stderr


def test_a_broken_gguf_is_one_line_of_ours_with_llama_cpp_s_reason(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(BROKEN)
    classified = run_cli("classify", "好", "--model", str(broken))
    assert classified.returncode == 2
    assert classified.stdout == ""
    assert len(classified.stderr.splitlines()) == 1, classified.stderr
    assert classified.stderr.startswith(f"Error: llama.cpp could not load {broken} (")
    assert "this GGUF file is version" in classified.stderr  # llama.cpp's reason, in our line
    assert "Traceback" not in classified.stderr

    downloaded = run_cli("download", "--from", str(broken), "--models-dir", str(tmp_path / "m"))
    assert downloaded.returncode == 2
    assert len(downloaded.stderr.splitlines()) == 1, downloaded.stderr
    assert downloaded.stderr.startswith("Error: llama.cpp could not read ")
    assert llama_lines(downloaded.stdout, downloaded.stderr) == []


@pytest.mark.model
def test_llama_cpp_levels_reach_logging_as_whole_lines(model_path, caplog):
    """The context warning is a WARNING (llama-cpp-python's own callback read it as an error
    and printed it), the loader's lines are INFO, each record one whole line."""
    native_log.install()
    saved = native_log.LOGGER.level
    native_log.LOGGER.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger=native_log.LOGGER.name):
            read_model_name(model_path)
    finally:
        native_log.LOGGER.setLevel(saved)
    records = [r for r in caplog.records if r.name == native_log.LOGGER.name]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("n_ctx_seq (512) > n_ctx_train (0)" in message for message in warnings)
    loader = [r.levelno for r in records if r.getMessage().startswith("llama_model_loader:")]
    assert loader and set(loader) == {logging.INFO}
    assert all("\n" not in r.getMessage() and r.getMessage().strip() for r in records)


def test_a_refused_file_s_error_carries_llama_cpp_s_first_error_line(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(BROKEN)
    with pytest.raises(ModelLoadError, match=r"\(this GGUF file is version \d+ but this software"):
        read_model_name(broken)
