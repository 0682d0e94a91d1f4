"""`allinone classify --ray`: what a user gets wrong comes back as one line, fast, with no model
and no cluster work (the runs themselves are in tests/test_ray.py)."""

import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from app import cli
from tests.conftest import ROOT, write

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # as if the extra were not installed: `import ray` fails
from app import cli
cli.main(sys.argv[1:], prog_name="allinone")
"""


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "app.cli"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], result.stderr


def test_without_the_extra_it_says_what_to_install(tmp_path):
    source = write(tmp_path / "in.txt", "很好\n")
    target = str(tmp_path / "out.jsonl")
    result = _run("classify", str(source), "-o", target, "--ray", "local", code=WITHOUT_RAY)
    _one_line_error(result, 6, 'pip install "allinone[ray]"')


def test_an_unreachable_cluster_is_named_in_seconds(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = write(tmp_path / "in.txt", "很好\n")
    started = time.monotonic()
    target = str(tmp_path / "o.jsonl")
    result = _run("classify", str(source), "-o", target, "--ray", f"127.0.0.1:{port}")
    _one_line_error(result, 6, f"Cannot reach a Ray cluster at 127.0.0.1:{port}")
    assert time.monotonic() - started < 60  # Ray alone would retry for minutes
    result = _run("classify", str(source), "-o", target, "--ray", "nowhere")
    _one_line_error(result, 6, "give local, auto, HOST:PORT")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--actors", "2"], "--actors and --threads-per-actor go with --ray"),
        (["--ray", "local"], "--ray needs -o OUT"),
        (["--ray", "local", "-o", "x.jsonl", "--threads", "2"], "with --ray use --threads-per"),
    ],
)
def test_flags_that_do_not_go_together(tmp_path, args, message):
    source = write(tmp_path / "in.txt", "很好\n")
    result = CliRunner().invoke(cli.main, ["classify", str(source), *args])
    assert result.exit_code == 5
    assert message in result.output


def test_a_bad_row_stops_before_any_cluster_is_joined(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.jsonl", '{"text": "很好"}\n{"text": 3}\n')
    # An address that cannot answer: reaching it would be a different error.
    result = CliRunner().invoke(
        cli.main, ["classify", str(folder), "-o", str(tmp_path / "o"), "--ray", "127.0.0.1:1"]
    )
    assert result.exit_code == 5
    assert "a.jsonl, line 2: expected an object with a string 'text' field" in result.output


def test_help_explains_every_new_flag_with_its_default():
    text = CliRunner().invoke(cli.main, ["classify", "--help"]).output
    for flag in ("--ray ADDRESS", "--actors", "--threads-per-actor"):
        assert flag in text
    assert "[default: off: one" in text and "[default: 1;" in text
    assert "local (start Ray on this machine)" in text and "ray://HOST:PORT" in text


class _FlakyRay:
    """Stands in for the ray module: its Ray Client head fails to start a server `fails` times."""

    def __init__(self, fails: int):
        self.fails, self.inits, self.shutdowns = fails, 0, 0

    def init(self, **_: object) -> None:
        self.inits += 1
        if self.inits <= self.fails:
            raise ConnectionAbortedError(
                "Initialization failure from server:\nTraceback (most recent call last):\n"
                "RuntimeError: Starting Ray client server failed."
            )

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize("fails, joins", [(1, True), (2, True), (3, False)])
def test_a_ray_client_server_that_fails_to_start_is_asked_again(monkeypatch, fails, joins):
    from app.errors import ClusterError
    from app.jobs import ray_classify

    fake = _FlakyRay(fails)
    monkeypatch.setattr(ray_classify, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_classify, "_check_reachable", lambda address: None)
    monkeypatch.setattr(ray_classify, "CLIENT_RETRY_SECONDS", 0.0)
    if joins:
        ray_classify.connect("ray://127.0.0.1:10001")
        assert (fake.inits, fake.shutdowns) == (fails + 1, fails)
    else:
        with pytest.raises(ClusterError) as caught:
            ray_classify.connect("ray://127.0.0.1:10001")
        assert fake.inits == ray_classify.CLIENT_ATTEMPTS
        # the server's own last line is shown, not an empty "failure from server:"
        assert "Starting Ray client server failed" in str(caught.value)
