"""A user's first hour: the built wheel in a new virtual environment, run from an empty folder.

Nothing of the checkout is visible to it: not prompts.yaml, not heads/, not ../shared, not
scripts/. The model is copied in with `allinone download --from`, renamed inside (its GGUF
`general.name`), so that the shipped heads do not fit it, as with any model a user brings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.model

OLD_NAME = b"Qwen2.5 Coder 0.5B Instruct AWQ"
NEW_NAME = b"Xwen2.5 Coder 0.5B Instruct AWQ"  # same length: the header stays valid


def renamed_copy(model_path: Path, target: Path) -> Path:
    """A copy of the model whose metadata says another name (the weights are the same)."""
    shutil.copyfile(model_path, target)
    with target.open("r+b") as file:
        head = file.read(1 << 16)
        at = head.find(OLD_NAME)
        assert at > 0, "the mirror model's general.name moved: update this test"
        file.seek(at)
        file.write(NEW_NAME)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new venv with the wheel and its `train` extra installed; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work), str(ROOT)], check=True)
    (wheel,) = work.glob("allinone-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    bin_dir = work / "venv" / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "-q", "install", f"{wheel}[train]"], check=True
    )
    return bin_dir


def test_the_installed_package_from_an_empty_folder(installed, model_path, tmp_path):
    home = tmp_path / "home"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALLINONE_")} | {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "PATH": f"{installed}:{os.environ['PATH']}",
    }

    def allinone(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(installed / "allinone"), *args],
            cwd=empty, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    help_text = allinone("classify", "--help").stdout
    assert str(home / ".cache" / "allinone" / "models") in "".join(help_text.split())

    missing = allinone("classify", "好")
    assert missing.returncode == 2 and "allinone download" in missing.stderr
    assert "scripts/" not in missing.stderr

    source = renamed_copy(model_path, tmp_path / "mine.gguf")
    fetched = allinone(
        "download", "--from", str(source), "--model", "qwen2.5-coder-0.5b-instruct-q4_k_m"
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "allinone train-head --role sentiment" in fetched.stderr  # said right after fetching
    assert not list(empty.iterdir()), "nothing may be written into the working folder"

    before = allinone("classify", "这家酒店的服务非常好，下次还来。")
    assert before.returncode == 0, before.stderr
    assert before.stdout.split("\t")[0] in ("正面", "负面")
    assert (
        "no learned head" in before.stderr
        and "allinone train-head --role sentiment" in before.stderr
    )

    chat = allinone("chat", "--once", "今天又被老板骂了。", "--max-tokens", "24")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith("[情感:") and len(chat.stdout.splitlines()) >= 2

    trained = allinone("train-head", "--role", "sentiment", "--rows", "40")
    assert trained.returncode == 0, trained.stderr
    head = home / ".local" / "share" / "allinone" / "heads" / "xwen2.5-coder-0.5b-instruct-awq"
    assert (head / "sentiment.json").is_file()

    after = allinone("classify", "这家酒店的服务非常好，下次还来。")
    assert after.returncode == 0, after.stderr
    assert "no learned head" not in after.stderr, after.stderr
    assert not list(empty.iterdir())
