"""Atomic writes: the target appears only when the write succeeds, and a failed write leaves the
old target as it was with no temporary file beside it."""

import pytest

from app.atomic import atomic_open, atomic_path, write_text_atomic


class Boom(Exception):
    pass


def test_the_target_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as temp:
        assert temp == tmp_path / "out.json.partial"
        temp.write_text("new", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_target_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(Boom), atomic_open(target, suffix=".tmp", fsync=True) as out:
        out.write("half a ")
        raise Boom
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_a_keyboard_interrupt_cleans_up_too(tmp_path):
    target = tmp_path / "model.gguf"
    with pytest.raises(KeyboardInterrupt), atomic_open(target, "wb") as out:
        out.write(b"GGUF")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failure_before_the_temporary_file_exists_is_passed_on(tmp_path):
    with pytest.raises(Boom), atomic_path(tmp_path / "x.npz"):
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_write_text_atomic_replaces_the_whole_content(tmp_path):
    target = tmp_path / "head.json"
    target.write_text("a longer old content", encoding="utf-8")
    write_text_atomic(target, "正面", fsync=True)
    assert target.read_text(encoding="utf-8") == "正面"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json"]
