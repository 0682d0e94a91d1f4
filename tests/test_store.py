"""The conversation store: its file checks, schema, branches, retention, crash safety and several
processes writing at once; then the Python API over it (Conversations) on a scripted engine."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import app.roles.store_file as store_file
from app.config import load_settings
from app.errors import InputError
from app.roles.conversations import Conversations, history_of, items_text, message_item
from app.roles.prompting import Turn
from app.roles.store import (
    APPLICATION,
    SCHEMA_VERSION,
    ConversationNotFound,
    ConversationStore,
    NameTaken,
    StoredTurn,
    StoreError,
    TurnNotFound,
    default_store_path,
    store_path,
)
from app.roles.tools import ToolCall
from tests.conftest import ROOT

STORE_FILES = ("store.py", "store_file.py")


def said(text: str) -> list[dict]:
    return [message_item("user", text)]


def answer(text: str) -> list[dict]:
    return [message_item("assistant", text)]


@pytest.fixture
def store(tmp_path):
    with ConversationStore(tmp_path / "conversations.sqlite3") as opened:
        yield opened


def make_store(path: Path, turns: int = 3) -> None:
    with ConversationStore(path) as filled:
        for n in range(turns):
            turn = filled.begin_turn(None, None, said(f"消息 {n}"))
            filled.finish_turn(turn.id, answer(f"回复 {n}"))


def refused(path: Path, *words: str) -> StoreError:
    """Opening `path` fails with a StoreError naming it (and `words`), the file untouched."""
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        ConversationStore(path)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert path.read_bytes() == before, "a refused file must be left byte for byte"
    return caught.value


# -- the file --------------------------------------------------------------------------------


def test_a_new_store_is_marked_ours_versioned_and_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "er" / "conversations.sqlite3"  # missing folders are made
    ConversationStore(path).close()
    db = sqlite3.connect(path)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta == {"application": APPLICATION, "schema_version": str(SCHEMA_VERSION)}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_default_path_follows_xdg_data_home_and_settings_move_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("ALLINONE_STORE", raising=False)
    expected = tmp_path / "data" / "allinone" / "conversations.sqlite3"
    assert default_store_path() == expected
    assert store_path(load_settings()) == expected
    monkeypatch.setenv("ALLINONE_STORE", str(tmp_path / "elsewhere.db"))
    assert store_path(load_settings()) == tmp_path / "elsewhere.db"
    assert store_path(load_settings(store=tmp_path / "flag.db")) == tmp_path / "flag.db"


def test_another_programs_database_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    refused(path, "another program", "--store")


def test_a_meta_table_of_another_application_is_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('application', 'someone-else')")
    db.commit()
    db.close()
    refused(path, "another program")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite3"
    path.write_text("这不是数据库\n" * 100, encoding="utf-8")
    refused(path, "not a SQLite file", "Move it aside")


def test_a_file_with_a_sqlite_header_and_garbage_after_is_refused(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    refused(path, "Move it aside")


def test_a_store_with_a_damaged_page_is_refused(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    make_store(path, turns=200)  # several pages, written back into the file on close
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page : 3 * page] = b"\xa5" * page  # a b-tree page of garbage
    path.write_bytes(bytes(data))
    refused(path, "Move it aside")


def test_a_store_from_a_newer_allinone_is_refused(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    make_store(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    refused(path, "newer allinone", "Upgrade allinone")


def test_an_unwritable_place_is_a_store_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(StoreError, match="a-file"):
        ConversationStore(blocker / "conversations.sqlite3")
    with pytest.raises(StoreError, match="is a folder"):
        ConversationStore(tmp_path)


def test_an_older_store_is_migrated_forward_keeping_its_turns(tmp_path, monkeypatch):
    path = tmp_path / "conversations.sqlite3"
    make_store(path, turns=2)
    step = ("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",)
    monkeypatch.setattr(store_file, "MIGRATIONS", [*store_file.MIGRATIONS, step])
    monkeypatch.setattr(store_file, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with ConversationStore(path) as migrated:
        assert [c.turn_count for c in migrated.conversations()] == [1, 1]
    db = sqlite3.connect(path)
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    columns = [row[1] for row in db.execute("PRAGMA table_info(conversations)")]
    db.close()
    assert version == str(SCHEMA_VERSION + 1) and "pinned" in columns


# -- turns, conversations and branches ------------------------------------------------------


def test_turns_chain_within_a_conversation_and_its_head_moves(store):
    first = store.begin_turn(None, None, said("我叫小林。"), verdict={"label": "负面"})
    assert first.status == "in_progress" and first.id.startswith("resp_")
    assert first.conversation_id.startswith("conv_") and first.previous_id is None
    done = store.finish_turn(first.id, answer("你好小林"), usage={"input_tokens": 3})
    assert done.status == "completed" and done.usage == {"input_tokens": 3}
    second = store.begin_turn(first.conversation_id, None, said("我叫什么？"))
    assert second.previous_id == first.id, "a conversation continues from its head"
    third = store.begin_turn(None, second.id, said("再说一次"))
    assert third.conversation_id == first.conversation_id, "continuing the head stays in it"
    conversation = store.conversation(first.conversation_id)
    assert conversation.head_id == third.id and conversation.turn_count == 3
    assert [t.id for t in store.turns(first.conversation_id)] == [first.id, second.id, third.id]
    assert store.turns("conv_nothing") == [] and store.chain("resp_nothing") == []


def test_continuing_an_older_turn_branches_into_a_new_conversation(store):
    first = store.begin_turn(None, None, said("一"))
    second = store.begin_turn(None, first.id, said("二"))
    branch = store.begin_turn(None, first.id, said("分支"))
    assert branch.conversation_id != first.conversation_id
    assert [t.id for t in store.chain(branch.id)] == [first.id, branch.id]
    assert store.conversation(first.conversation_id).head_id == second.id, "the old one stays"
    assert store.conversation(branch.conversation_id).title == "分支"
    assert store.conversation(branch.conversation_id).turn_count == 2

    assert store.delete_conversation(first.conversation_id)
    assert store.turn(first.id) is None and store.turn(second.id) is None
    assert [t.id for t in store.chain(branch.id)] == [branch.id], "the branch starts later"
    follow = store.begin_turn(None, branch.id, said("继续"))
    assert follow.conversation_id == branch.conversation_id
    assert not store.delete_conversation(first.conversation_id)


def test_missing_turns_and_conversations_are_lookup_errors(store):
    with pytest.raises(TurnNotFound) as caught:
        store.begin_turn(None, "resp_gone", said("x"))
    assert isinstance(caught.value, LookupError)
    with pytest.raises(ConversationNotFound):
        store.begin_turn("conv_gone", None, said("x"))
    with pytest.raises(TurnNotFound):
        store.finish_turn("resp_gone", answer("x"))
    assert store.conversations() == [], "a refused turn leaves nothing behind"


def test_names_are_unique_and_found_like_ids(store):
    work = store.create_conversation("work")
    assert store.conversation("work") == store.conversation(work.id) == work
    with pytest.raises(NameTaken):
        store.create_conversation("work")
    home = store.create_conversation()
    with pytest.raises(NameTaken):
        store.rename(home.id, "work")
    assert store.rename(home.id, "home").name == "home"
    with pytest.raises(InputError):
        store.rename(home.id, "  ")
    turn = store.begin_turn("work", None, said("用名字继续"))
    assert turn.conversation_id == work.id


def test_the_title_is_the_first_user_message_on_one_line_cut_to_60(store):
    text = "第一行\n第二行 " + "长" * 100
    turn = store.begin_turn(None, None, [message_item("system", "规则"), *said(text)])
    store.begin_turn(turn.conversation_id, None, said("后来的话"))
    title = store.conversation(turn.conversation_id).title
    assert title.startswith("第一行 第二行 长") and len(title) == 60


def test_newest_first_and_prune_deletes_what_was_untouched(store, tmp_path):
    old = store.begin_turn(None, None, said("很久以前"))
    new = store.begin_turn(None, None, said("刚才"))
    assert [c.id for c in store.conversations()] == [new.conversation_id, old.conversation_id]
    db = sqlite3.connect(store.path)
    db.execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ?",
        (time.time() - 40 * 86_400, old.conversation_id),
    )
    db.commit()
    db.close()
    assert store.prune(45) == 0
    assert store.prune(30) == 1
    assert [c.id for c in store.conversations()] == [new.conversation_id]
    assert store.turn(old.id) is None
    with ConversationStore(store.path, keep_days=0) as emptied:  # pruned as it opens
        assert emptied.conversations() == []


def test_deleting_the_head_turn_moves_the_head_back(store):
    first = store.begin_turn(None, None, said("一"))
    second = store.begin_turn(None, first.id, said("二"))
    assert store.delete_turn(second.id)
    assert store.conversation(first.conversation_id).head_id == first.id
    assert store.delete_turn(first.id) and not store.delete_turn(first.id)
    assert store.conversation(first.conversation_id) is None, "unnamed and empty: gone"


def test_threads_share_one_store_and_every_turn_lands_in_one_chain(store):
    conversation = store.create_conversation("shared")
    errors: list[BaseException] = []

    def talk() -> None:
        try:
            for n in range(50):
                turn = store.begin_turn(conversation.id, None, said(f"线程 {n}"))
                store.finish_turn(turn.id, answer("好"))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=talk) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    chain = store.turns("shared")
    assert len(chain) == 400 and all(turn.status == "completed" for turn in chain)


# -- crashes and several processes -----------------------------------------------------------

_WRITER = """
import sys
from app.roles.store import ConversationStore
from app.roles.conversations import message_item

store = ConversationStore(sys.argv[1])
n = 0
while True:
    turn = store.begin_turn(None if n % 7 == 0 else "crash", None, [message_item("user", "问")])
    if n == 0:
        store.rename(turn.conversation_id, "crash")
    print("begun", turn.id, flush=True)
    store.finish_turn(turn.id, [message_item("assistant", "答" * 2000)], usage={"n": n})
    print("finished", turn.id, flush=True)
    n += 1
"""


def test_a_writer_killed_mid_way_leaves_a_whole_store_and_no_false_completion(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    finished: set[str] = set()
    begun: set[str] = set()
    for line in child.stdout:
        kind, turn_id = line.split()
        (finished if kind == "finished" else begun).add(turn_id)
        if len(finished) == 300:
            child.send_signal(signal.SIGKILL)  # no clean-up of any kind: a power cut, nearly
            break
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    every_id = [row[0] for row in db.execute("SELECT id FROM turns")]
    db.close()
    assert begun <= set(every_id), "a turn is committed before begin_turn returns"
    with ConversationStore(path) as reopened:
        turns = [reopened.turn(turn_id) for turn_id in every_id]
        for turn in turns:
            if turn.id in finished or turn.status == "completed":
                assert turn.status == "completed"
                assert items_text(turn.output_items) == "答" * 2000, "whole, never half"
            else:
                assert turn.status == "in_progress" and turn.output_items == []
        assert sum(turn.status == "in_progress" for turn in turns) <= 1, "only the last one"
        crash = reopened.conversation("crash")
        assert crash is not None and crash.turn_count > 200


_STRESS = """
import sys, time
from pathlib import Path
from app.roles.store import ConversationStore
from app.roles.conversations import message_item

path, go, worker = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.01)
store = ConversationStore(path)  # all at once, on a file none of them has made yet
for n in range(500):
    key = "shared" if n % 2 == 0 else f"own-{worker}"
    if store.conversation(key) is None:
        try:
            store.create_conversation(key)
        except Exception:
            pass  # another worker named it first
    turn = store.begin_turn(key, None, [message_item("user", f"{worker}:{n}")])
    store.finish_turn(turn.id, [message_item("assistant", "ok")])
print("done", worker, flush=True)
"""


def test_four_processes_write_thousands_of_turns_into_one_file_without_a_lock_error(tmp_path):
    path = tmp_path / "conversations.sqlite3"
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _STRESS, str(path), str(go), str(worker)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in range(4)
    ]
    time.sleep(1.0)  # let every interpreter start, so they really open the file together
    go.touch()
    for worker, process in enumerate(workers):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert out.strip() == f"done {worker}"
        assert "locked" not in err and "busy" not in err

    with ConversationStore(path) as reopened:
        shared = reopened.turns("shared")
        assert len(shared) == 4 * 250, "every head move was one transaction: one straight chain"
        assert len({turn.previous_id for turn in shared}) == len(shared)
        for worker in range(4):
            own = reopened.turns(f"own-{worker}")
            texts = [items_text(turn.input_items) for turn in own]
            assert texts == [f"{worker}:{n}" for n in range(1, 500, 2)], "in order, none lost"
        assert all(turn.status == "completed" for turn in shared)


# -- the Python API ----------------------------------------------------------------------------


def stored(inputs: list[dict], outputs: list[dict], status: str = "completed") -> StoredTurn:
    return StoredTurn("resp_x", "conv_x", None, 0.0, status, inputs, outputs)  # type: ignore[arg-type]


def test_history_of_turns_items_into_prompt_turns():
    call = {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "call_1", "output": "晴"}
    turns = [
        stored([message_item("system", "规则"), *said("天气？")], [call]),
        stored([result], answer("今天晴。")),
        stored(said("没答完"), answer("半句"), status="incomplete"),
    ]
    assert history_of(turns) == [
        Turn("user", "天气？"),
        Turn("assistant", "", (ToolCall("weather", "{}", id="call_1"),)),
        Turn("tool", "晴"),
        Turn("assistant", "今天晴。"),
        Turn("user", "没答完"),
        Turn("assistant", "半句"),  # a reply cut short is kept as far as it went
    ]


def test_an_assistant_message_and_its_calls_are_one_turn():
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": 1}'}
    turns = history_of([stored(said("问"), [*answer("我查一下"), call])])
    assert turns[1] == Turn("assistant", "我查一下", (ToolCall("f", '{"a": 1}', id="c"),))


@pytest.fixture
def conversations(fake_assistant, tmp_path):
    with ConversationStore(tmp_path / "api.sqlite3") as opened:
        yield Conversations(fake_assistant, opened)


def test_say_keeps_the_turn_with_its_verdict_and_the_next_turn_sees_it(conversations, fake_engine):
    fake_engine.enqueue_choice([0.1, 0.9])
    fake_engine.enqueue_reply(["别", "难过"])
    first = conversations.say(None, "今天好累", create_as="work", temperature=0.0)
    begun = conversations.store.turn(first.turn_id)
    assert begun.status == "in_progress" and begun.verdict == {"label": "负面", "confidence": 0.9}
    assert "".join(first.stream) == "别难过"
    kept = conversations.store.turn(first.turn_id)
    assert kept.status == "completed" and items_text(kept.output_items) == "别难过"
    assert (
        kept.usage["output_tokens"] == 2 and "cached_tokens" in kept.usage["input_tokens_details"]
    )

    fake_engine.enqueue_reply(["嗯"])
    second = conversations.say("work", "还是累", steer=False)
    assert second.verdict is None and "".join(second.stream) == "嗯"
    contents = [m["content"] for m in fake_engine.last_messages]
    assert contents[-3:] == ["今天好累", "别难过", "还是累"], "the stored history was sent"
    assert conversations.store.turn(second.turn_id).previous_id == first.turn_id
    assert [c.name for c in conversations.list()] == ["work"]


def test_a_reply_stopped_early_is_kept_incomplete_with_its_text_so_far(conversations, fake_engine):
    fake_engine.enqueue_reply(["一", "二", "三"])
    said_ = conversations.say(None, "讲个故事", steer=False)
    assert next(said_.stream) == "一"
    said_.stream.close()
    kept = conversations.store.turn(said_.turn_id)
    assert kept.status == "incomplete" and items_text(kept.output_items) == "一"

    fake_engine.enqueue_reply(["甲", "乙"])
    dropped = conversations.say(said_.conversation_id, "再讲", steer=False)
    turn_id = dropped.turn_id
    for _piece in dropped.stream:
        break
    del dropped, _piece  # dropped without close(): still finished
    assert conversations.store.turn(turn_id).status == "incomplete"


def test_say_to_a_missing_conversation_is_a_clear_error(conversations):
    with pytest.raises(ConversationNotFound, match="sessions list"):
        conversations.say("nobody", "你好")
    with pytest.raises(InputError):
        conversations.say(None, "   ")
    assert conversations.list() == []


def test_export_rename_and_delete(conversations, fake_engine):
    fake_engine.enqueue_choice([0.9, 0.1])
    fake_engine.enqueue_reply(["好"])
    "".join(conversations.say(None, "开心", create_as="a").stream)
    rows = list(conversations.export("a"))
    assert [(row["role"], row["content"]) for row in rows] == [
        ("user", "开心"),
        ("assistant", "好"),
    ]
    assert rows[0]["verdict"]["label"] == "正面" and "verdict" not in rows[1]
    json.dumps(rows, ensure_ascii=False)  # JSON-able as they are
    assert conversations.rename("a", "b").name == "b"
    assert len(conversations.open("b")) == 1
    conversations.delete("b")
    with pytest.raises(ConversationNotFound):
        conversations.open("b")


def test_store_modules_are_stdlib_only():
    sources = [(ROOT / "app" / "roles" / name).read_text(encoding="utf-8") for name in STORE_FILES]
    lines = [line for source in sources for line in source.splitlines()]
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    third_party = [line for line in imports if not line.startswith(("from app", "from __future__"))]
    modules = {line.split()[1].split(".")[0] for line in third_party}
    assert modules <= set(sys.stdlib_module_names), modules
