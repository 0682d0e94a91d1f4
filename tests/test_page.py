"""The chat page keeps its conversations: headless Chromium on the real server and model.

The page's sidebar lists the store's conversations; each message is kept through /v1/respond's
`session`, and the session routes open, rename and delete them. One server with a store of its
own serves this module, so the sidebar shows only what these tests wrote. The session routes'
errors are checked with plain HTTP.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.test_server import CHROMIUM, start_server

pytestmark = pytest.mark.model
SHORT = 24  # max tokens per reply: the tests look at what is kept, not at how long it is
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here"
)


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("page-store") / "conversations.sqlite3"


@pytest.fixture(scope="module")
def server(model_path: Path, store_file: Path, tmp_path_factory) -> Iterator[str]:
    """`allinone serve` keeping its conversations in `store_file` (a fresh store)."""
    saved = os.environ.get("ALLINONE_STORE")
    os.environ["ALLINONE_STORE"] = str(store_file)
    try:
        process, base = start_server(model_path, tmp_path_factory.mktemp("server") / "server.log")
    finally:
        os.environ["ALLINONE_STORE"] = saved or ""
        if saved is None:
            del os.environ["ALLINONE_STORE"]
    yield base
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "CI must install Debian's chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    yield context.new_page()
    context.close()


def sessions(server: str) -> list[dict]:
    return httpx.get(server + "/v1/sessions", timeout=30).json()["data"]


def session(server: str, key: str) -> dict:
    response = httpx.get(f"{server}/v1/sessions/{key}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def kept(server: str, text: str, key: str | None = None) -> dict:
    """One turn kept through /v1/respond (not streamed): its session, sentiment and reply."""
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 8, "stream": False}
    body |= {"session": key} if key else {"keep": True}
    response = httpx.post(server + "/v1/respond", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def send(page, text: str) -> None:
    """Type a message and press Enter (the keyboard way); wait for its reply to end."""
    done = page.locator(".bot[data-state=done]").count()
    page.fill("#text", text)
    page.press("#text", "Enter")
    page.wait_for_function(
        f"document.querySelectorAll('.bot[data-state=done]').length > {done}", timeout=120_000
    )


def current_id(page) -> str:
    page.wait_for_function("location.hash.length > 1", timeout=60_000)
    return page.evaluate("decodeURIComponent(location.hash.slice(1))")


def sidebar(page) -> dict[str, str]:
    """The sidebar's conversations: id -> the name or title it shows."""
    items = page.locator("[data-testid=session]")
    return {
        items.nth(i).get_attribute("data-id"): items.nth(i)
        .locator("[data-testid=session-name]")
        .inner_text()
        for i in range(items.count())
    }


def item(page, conversation_id: str):
    return page.locator(f"[data-testid=session][data-id='{conversation_id}']")


# -- the page in a browser ------------------------------------------------------------------


@needs_chromium
def test_chat_page_in_headless_chromium(server, page, tmp_path):
    page.goto(server + "/")
    page.fill("#text", "今天又被老板骂了。")
    page.click("#send")
    page.wait_for_selector("[data-testid=badge]", timeout=60_000)
    badge = page.inner_text("[data-testid=badge]")
    page.wait_for_selector(".bot[data-state=done]", timeout=120_000)
    reply = page.inner_text(".bot")
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert badge.startswith("负面")
    assert reply.strip()


@needs_chromium
def test_the_page_keeps_opens_renames_and_deletes_conversations(server, page):
    earlier = {c["id"] for c in sessions(server)}  # the other tests' conversations
    page.goto(f"{server}/?max_tokens={SHORT}")
    send(page, "今天又被老板骂了。")
    first = current_id(page)
    first_reply = page.inner_text(".bot")
    assert page.inner_text(".user [data-testid=badge]").startswith("负面")
    assert first_reply.strip()
    page.wait_for_selector(f"[data-testid=session][data-id='{first}'].current")

    # A reload shows the same conversation, its mood badge and reply, from the server.
    page.reload()
    page.wait_for_selector(".user [data-testid=badge]")
    assert page.inner_text(".user [data-testid=badge]").startswith("负面")
    assert page.inner_text(".bot[data-state=done]") == first_reply
    page.wait_for_selector(f"[data-testid=session][data-id='{first}'].current")
    assert current_id(page) == first

    # A new conversation: the log empties, the first message makes it, both are listed.
    page.click("[data-testid=new-session]")
    assert page.locator(".msg").count() == 0 and page.evaluate("location.hash") == ""
    send(page, "推荐一本适合周末读的书吧。")
    second = current_id(page)
    assert second != first
    page.wait_for_function(
        f"document.querySelectorAll('[data-testid=session]').length == {len(earlier) + 2}"
    )
    assert set(sidebar(page)) == earlier | {first, second}
    assert "current" in item(page, second).get_attribute("class")

    # Reopen the first and go on: the server keeps the follow-up after the first turn.
    item(page, first).locator("[data-testid=session-open]").click()
    page.wait_for_function(f"location.hash === '#{first}'")
    assert page.locator(".user").count() == 1 and page.inner_text(".bot") == first_reply
    send(page, "他还说我做事太慢。")
    assert page.locator(".user [data-testid=badge]").count() == 2
    kept_first = session(server, first)
    assert kept_first["turn_count"] == 2
    assert [t["user"] for t in kept_first["turns"]] == ["今天又被老板骂了。", "他还说我做事太慢。"]
    assert kept_first["turns"][0]["reply"] == first_reply
    assert session(server, second)["turn_count"] == 1

    # Rename (a prompt) and delete (a confirm) from the sidebar.
    page.once("dialog", lambda dialog: dialog.accept("老板的事"))
    item(page, first).locator("[data-testid=session-rename]").click()
    page.wait_for_function(
        f"""document.querySelector("[data-id='{first}'] [data-testid=session-name]")
            .textContent === '老板的事'"""
    )
    assert session(server, "老板的事")["id"] == first

    page.once("dialog", lambda dialog: dialog.accept())
    item(page, second).locator("[data-testid=session-delete]").click()
    item(page, second).wait_for(state="detached")
    assert set(sidebar(page)) == earlier | {first}
    assert second not in [c["id"] for c in sessions(server)]
    assert httpx.get(f"{server}/v1/sessions/{second}", timeout=30).status_code == 404


@needs_chromium
def test_a_conversation_of_the_cli_shows_in_the_sidebar(server, store_file, page, monkeypatch):
    monkeypatch.setenv("ALLINONE_STORE", str(store_file))
    done = run_cli("chat", "--session", "命令行", "--once", "今天升职了！", "--max-tokens", "16")
    assert done.returncode == 0, done.stderr
    page.goto(server + "/")
    page.wait_for_selector("[data-testid=session-name]:text-is('命令行')")
    page.click("[data-testid=session]:has-text('命令行') [data-testid=session-open]")
    page.wait_for_selector(".user [data-testid=badge]")
    assert page.inner_text(".user").startswith("今天升职了！")
    assert page.inner_text(".user [data-testid=badge]").startswith("正面")
    assert page.inner_text(".bot[data-state=done]").strip()


@needs_chromium
def test_on_a_phone_the_sidebar_is_a_drawer_used_by_keyboard(server, browser):
    conversation = kept(server, "今天天气真好。")["session"]["id"]
    context = browser.new_context(viewport={"width": 390, "height": 760})
    page = context.new_page()
    try:
        page.goto(server + "/")
        page.wait_for_selector(f"[data-testid=session][data-id='{conversation}']", state="attached")
        assert not page.is_visible("#sidebar") and page.is_visible("#text")
        page.focus("#menu")
        page.keyboard.press("Enter")
        assert page.is_visible("#sidebar")
        assert page.evaluate("document.activeElement.dataset.testid") == "new-session"
        page.keyboard.press("Escape")
        assert not page.is_visible("#sidebar")
        assert page.evaluate("document.activeElement.id") == "menu"

        page.keyboard.press("Enter")
        item(page, conversation).locator("[data-testid=session-open]").focus()
        page.keyboard.press("Enter")
        page.wait_for_selector(".bot[data-state=done]")
        assert not page.is_visible("#sidebar"), "picking a conversation closes the drawer"
        assert page.inner_text(".user").startswith("今天天气真好。")
        assert current_id(page) == conversation
    finally:
        context.close()


# -- the session routes over plain HTTP -----------------------------------------------------


def test_respond_keeps_a_turn_only_when_asked(server):
    before = len(sessions(server))
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 8, "stream": False}
    plain = httpx.post(server + "/v1/respond", json=body, timeout=120).json()
    assert "session" not in plain and len(sessions(server)) == before

    first = kept(server, "今天又被老板骂了。")
    conversation = first["session"]["id"]
    assert conversation.startswith("conv_") and first["session"]["turn_id"].startswith("resp_")
    listed = sessions(server)
    assert listed[0]["id"] == conversation and listed[0]["turn_count"] == 1
    assert listed[0]["title"] == "今天又被老板骂了。"
    turn = session(server, conversation)["turns"][0]
    assert turn["reply"] == first["reply"] and turn["status"] == "completed"
    assert turn["verdict"]["label"] == first["sentiment"]["label"] == "负面"

    streamed = {**body, "stream": True, "session": conversation}
    streamed["messages"] = [{"role": "user", "content": "他还说我做事太慢。"}]
    with httpx.stream("POST", server + "/v1/respond", json=streamed, timeout=120) as response:
        lines = [line for line in response.iter_lines() if line.startswith(("event:", "data:"))]
    events = [line.split(":", 1)[1].strip() for line in lines if line.startswith("event:")]
    assert events[:2] == ["session", "sentiment"] and events[-1] == "done"
    assert json.loads(lines[1].split(":", 1)[1])["id"] == conversation
    assert session(server, conversation)["turn_count"] == 2
    assert sessions(server)[0]["id"] == conversation, "the conversation just used comes first"


def test_a_kept_reply_left_mid_stream_is_kept_as_incomplete(server):
    conversation = kept(server, "今天好累。")["session"]["id"]
    body = {
        "messages": [{"role": "user", "content": "写一篇很长的作文，讲讲你的一天。"}],
        "max_tokens": 300,
        "session": conversation,
    }
    with httpx.stream("POST", server + "/v1/respond", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                break  # leave after the first piece of the reply
    deadline = time.monotonic() + 60
    while (turn := session(server, conversation)["turns"][-1])["status"] == "in_progress":
        assert time.monotonic() < deadline, "the left reply's turn was never finished"
        time.sleep(0.2)
    assert turn["status"] == "incomplete" and turn["user"].startswith("写一篇很长的作文")
    assert turn["reply"].strip(), "the text so far is kept"


def test_sessions_by_name_rename_and_delete(server):
    conversation = kept(server, "周末去爬山了。")["session"]["id"]
    renamed = httpx.patch(
        f"{server}/v1/sessions/{conversation}", json={"name": "  爬山  "}, timeout=30
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "爬山"
    assert session(server, "爬山")["id"] == conversation
    again = kept(server, "山顶的风景很美。", key="爬山")
    assert again["session"]["id"] == conversation
    assert session(server, conversation)["turn_count"] == 2

    deleted = httpx.delete(f"{server}/v1/sessions/爬山", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": conversation,
        "object": "conversation.deleted",
        "deleted": True,
    }
    assert conversation not in [c["id"] for c in sessions(server)]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "needle"),
    [
        ("GET", "/v1/sessions/conv_000000000000000000000000", None, 404, "GET /v1/sessions"),
        ("PATCH", "/v1/sessions/nobody", {"name": "x"}, 404, "nobody"),
        ("DELETE", "/v1/sessions/nobody", None, 404, "nobody"),
        ("PATCH", "/v1/sessions/{own}", {"name": "   "}, 400, "not empty"),
        ("PATCH", "/v1/sessions/{own}", {"name": "长" * 101}, 400, "100 characters"),
        ("PATCH", "/v1/sessions/{own}", {"name": 5}, 400, "name"),
        ("PATCH", "/v1/sessions/{own}", {"name": "x", "title": "y"}, 400, "unknown field"),
        ("PATCH", "/v1/sessions/{own}", {"name": "别人的"}, 409, "already named"),
        ("POST", "/v1/respond", {"session": "nobody"}, 404, "nobody"),
        ("POST", "/v1/respond", {"session": ""}, 400, "session"),
        ("POST", "/v1/respond", {"session": "{own}", "history": True}, 400, "only the new"),
        ("POST", "/v1/respond", {"keep": True, "history": True}, 400, "only the new"),
    ],
)
def test_session_errors_are_openai_style_4xx(server, method, path, payload, status, needle):
    own = _named(server, "自己的")
    _named(server, "别人的")
    if method == "POST":
        payload = dict(payload)
        messages = [{"role": "user", "content": "你好"}]
        if payload.pop("history", False):
            messages = [
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"},
                *messages,
            ]
        if payload.get("session") == "{own}":
            payload["session"] = own
        payload |= {"messages": messages, "max_tokens": 8, "stream": False}
    response = httpx.request(method, server + path.replace("{own}", own), json=payload, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert session(server, own)["name"] == "自己的", "a refused request changes nothing"


def _named(server: str, name: str) -> str:
    """The id of the conversation named `name`, kept through /v1/respond the first time."""
    found = httpx.get(f"{server}/v1/sessions/{name}", timeout=30)
    if found.status_code == 200:
        return found.json()["id"]
    conversation = kept(server, "今天有点累。")["session"]["id"]
    response = httpx.patch(f"{server}/v1/sessions/{conversation}", json={"name": name}, timeout=30)
    assert response.status_code == 200, response.text
    return conversation
