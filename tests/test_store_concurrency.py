"""One store file, many writers at once, for a minute: `allinone serve` answering 8 clients that
keep their turns, and two `allinone chat --session` processes, all writing the same file. No
writer may see "database is locked", and every turn each of them finished must be in the file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.test_server import start_server

pytestmark = pytest.mark.model
SECONDS = 60
CLIENTS = 8
CLI_MESSAGES = ["今天好累。", "工作做不完。", "不过晚饭很好吃！", "明天还要早起。", "晚安。"]


def kept_turn(base: str, session: str | None) -> tuple[str, str]:
    """One kept /v1/respond turn, streamed to its end: (conversation id, turn id)."""
    body = {"messages": [{"role": "user", "content": "我有点难过。"}], "max_tokens": 6}
    body |= {"session": session} if session else {"keep": True}
    ids: dict[str, str] = {}
    with httpx.stream("POST", base + "/v1/respond", json=body, timeout=300) as response:
        assert response.status_code == 200, response.read().decode()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "session":
                ids = json.loads(line.split(":", 1)[1])
    return ids["id"], ids["turn_id"]


def test_eight_clients_and_two_cli_sessions_write_one_store(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = tmp_path / "shared.sqlite3"
    monkeypatch.setenv("ALLINONE_STORE", str(store))  # the server's and the chats' store
    process, base = start_server(model_path, tmp_path / "server.log")
    done: list[tuple[str, str]] = []
    errors: list[str] = []
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        session = None
        try:
            while time.monotonic() < deadline:
                session, turn = kept_turn(base, session)
                done.append((session, turn))
        except Exception as error:  # noqa: BLE001 - every failure is reported below
            errors.append(repr(error))

    chats = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "chat", "--session", name, "--model", str(model_path)]
            + ["--max-tokens", "6", "--seed", "3"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("命令行甲", "命令行乙")
    ]
    try:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        outputs = [chat.communicate("\n".join(CLI_MESSAGES) + "\n", timeout=600) for chat in chats]
        for thread in threads:
            thread.join(timeout=600)
    finally:
        process.terminate()
        process.wait(timeout=60)
    log = (tmp_path / "server.log").read_text(encoding="utf-8")
    assert not errors, errors
    for chat, (_, stderr) in zip(chats, outputs, strict=True):
        assert chat.returncode == 0, stderr
        assert "locked" not in stderr
    assert "locked" not in log and "Traceback" not in log
    assert len(done) >= CLIENTS, "every client finished at least one turn"

    db = sqlite3.connect(store)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status = dict(db.execute("SELECT id, status FROM turns").fetchall())
    assert all(status.get(turn) == "completed" for _, turn in done), "a served turn was lost"
    for name in ("命令行甲", "命令行乙"):
        (count,) = db.execute(
            "SELECT COUNT(*) FROM turns t JOIN conversations c ON t.conversation_id = c.id "
            "WHERE c.name = ? AND t.status = 'completed'",
            (name,),
        ).fetchone()
        assert count == len(CLI_MESSAGES), f"{name}: {count} of {len(CLI_MESSAGES)} turns kept"
