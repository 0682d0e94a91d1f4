"""The HTTP server, for real: `allinone serve` on a free loopback port with the real model.

Driven by the official `openai` client (plain and streaming) and plain HTTP; the chat page's
tests in headless Chromium are in tests/test_page.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.model
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_path, log_path, *, store=None, seconds=60):
    """`allinone serve` as a real process on a free loopback port, logging to `log_path`
    (appended to: a restarted server's lines follow the first one's), keeping conversations
    in `store` when given (else the session's temporary store)."""
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    command += ["--model", str(model_path), "--seed", "7"]
    env = {**os.environ, **({"ALLINONE_STORE": str(store)} if store is not None else {})}
    with log_path.open("a", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail("server exited: " + log_path.read_text(encoding="utf-8"))
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"server did not become healthy in {seconds} s")


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    """The shared server; yields its base URL and the file its log goes to."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process, base = start_server(model_path, log_path)
    yield base, log_path
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def server(served):
    return served[0]


def wait_for_log(log_path, needle, seconds=30):
    """The server log's lines that contain `needle`, waiting for the first one to be written."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = [
            line for line in log_path.read_text(encoding="utf-8").splitlines() if needle in line
        ]
        if lines:
            return lines
        time.sleep(0.2)
    return []


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key="not-needed", timeout=120)


def test_health_and_models(server):
    assert httpx.get(server + "/health").json()["status"] == "ok"
    ids = [m["id"] for m in httpx.get(server + "/v1/models").json()["data"]]
    assert "allinone:sentiment" in ids and "allinone:assistant" in ids


def test_openai_client_plain(client):
    reply = client.chat.completions.create(
        model="allinone",
        messages=[{"role": "user", "content": "你好，今天天气不错"}],
        temperature=0,
        max_tokens=30,
    )
    text = reply.choices[0].message.content
    assert text and "<|" not in text
    assert reply.choices[0].finish_reason == "stop"


def test_openai_client_streaming(client):
    stream = client.chat.completions.create(
        model="allinone",
        messages=[{"role": "user", "content": "推荐一本书"}],
        temperature=0,
        max_tokens=30,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len([p for p in pieces if p]) > 2 and "".join(pieces).strip()


def test_role_by_model_alias_gives_a_label(client):
    reply = client.chat.completions.create(
        model="allinone:sentiment",
        messages=[{"role": "user", "content": "服务太差了，再也不来"}],
    )
    assert reply.choices[0].message.content == "负面"


def test_curl_style_stream_ends_with_done(server):
    body = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 10, "stream": True}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][5:])["object"] == "chat.completion.chunk"


def test_sentiment_endpoint_keeps_input_order(server):
    texts = ["这家店太棒了，强烈推荐！", "质量太差，退货了。", "今天升职了，好开心"]
    data = httpx.post(server + "/v1/sentiment", json={"input": texts}, timeout=60).json()["data"]
    assert [d["label"] for d in data] == ["正面", "负面", "正面"]
    assert [d["index"] for d in data] == [0, 1, 2]
    one = httpx.post(server + "/v1/sentiment", json={"input": "差评"}, timeout=60).json()["data"]
    assert len(one) == 1 and 0.5 <= one[0]["confidence"] <= 1


def test_respond_sends_the_sentiment_before_the_reply(server):
    body = {"messages": [{"role": "user", "content": "今天又被老板骂了。"}], "max_tokens": 30}
    with httpx.stream("POST", server + "/v1/respond", json=body, timeout=60) as response:
        events = [
            line.split(":", 1)[1].strip()
            for line in response.iter_lines()
            if line.startswith("event:")
        ]
    assert events[0] == "sentiment" and "delta" in events and events[-1] == "done"


def test_disconnect_mid_stream_frees_the_model(served):
    server, log_path = served
    body = {
        "messages": [{"role": "user", "content": "写一篇很长的作文"}],
        "max_tokens": 400,
        "stream": True,
    }
    headers = {"x-request-id": "leaver"}
    with httpx.stream(
        "POST", server + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and '"content": "' in line and '""' not in line:
                break  # leave after the first piece of text, mid-stream
    closed = wait_for_log(log_path, "leaver client gone after")
    assert closed, "the server never noticed the client leaving"
    sent = int(closed[0].split("client gone after ")[1].split()[0])
    assert sent < 50, f"generation went on for {sent} pieces after the client left"
    # The model is free again: a new request is answered (it would queue behind 400 tokens).
    reply = httpx.post(server + "/v1/sentiment", json={"input": "很好"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["data"][0]["label"] == "正面"


def test_four_streams_at_once_all_complete(client):
    def stream(question):
        chunks = client.chat.completions.create(
            model="allinone",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=24,
            stream=True,
        )
        pieces, finish = [], None
        for chunk in chunks:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        return "".join(pieces), finish

    questions = ["推荐一本书", "周末做什么好？", "今天好累", "你好"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(stream, questions))
    for text, finish in replies:
        assert text.strip() and "<|" not in text and finish in ("stop", "length")


def test_sentiment_is_answered_while_four_replies_stream(server):
    body = {"messages": [{"role": "user", "content": "写一篇很长的作文"}], "max_tokens": 200}
    started, ended = threading.Barrier(5), []

    def stream():
        with httpx.stream(
            "POST", server + "/v1/chat/completions", json={**body, "stream": True}, timeout=120
        ) as response:
            first = True
            for line in response.iter_lines():
                if first and '"content": "' in line and '""' not in line:
                    first = False
                    started.wait()
        ended.append(time.monotonic())

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(timeout=120)
    reply = httpx.post(server + "/v1/sentiment", json={"input": "很好"}, timeout=60)
    answered = time.monotonic()
    for thread in threads:
        thread.join()
    assert reply.json()["data"][0]["label"] == "正面"
    assert answered < min(ended), "the label waited for a reply to finish"


def test_a_client_leaving_a_non_streamed_reply_stops_it(served):
    server, log_path = served
    # JSON output skips the chat guards (sentence limit), so this reply runs for many seconds.
    body = {
        "messages": [{"role": "user", "content": "用JSON列出一百个中国城市和它们的人口。"}],
        "response_format": {"type": "json_object"},
        "max_tokens": 400,
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server + "/v1/chat/completions",
            json=body,
            headers={"x-request-id": "impatient"},
            timeout=httpx.Timeout(60, read=1.0),
        )
    assert wait_for_log(log_path, "impatient client gone before the reply ended")


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v1/chat/completions", b"{not json", 400, ""),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "role": "nope"},
            404,
            "nope",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "temperature": 9},
            400,
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "assistant", "content": "hi"}]},
            400,
            "last message",
        ),
        ("/v1/sentiment", {"input": []}, 400, "input"),
        ("/v1/sentiment", {"input": "长" * 20000}, 400, "context window"),  # serve: 8192
        ("/v1/sentiment", {"inputs": "x"}, 400, "input"),
        ("/v1/sentiment", b"x" * 1_100_000, 413, "bytes"),
    ],
)
def test_bad_requests_get_openai_style_4xx(server, path, payload, status, needle):
    kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    response = httpx.post(
        server + path, headers={"content-type": "application/json"}, timeout=60, **kwargs
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_oversize_chunked_body_is_refused(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 50_000  # 2 MB with no Content-Length

    response = httpx.post(
        server + "/v1/sentiment",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert "bytes" in response.json()["error"]["message"]


def test_every_request_gets_an_id_and_one_log_line(served):
    server, log_path = served
    response = httpx.get(server + "/health", headers={"x-request-id": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert httpx.get(server + "/health").headers["x-request-id"], "an id is made up if none given"
    lines = wait_for_log(log_path, "abc123 GET /health -> 200 in ")
    assert len(lines) == 1


def test_sigterm_lets_the_reply_in_flight_finish_then_exits(model_path, tmp_path):
    process, base = start_server(model_path, tmp_path / "server.log")
    try:
        body = {
            "messages": [{"role": "user", "content": "介绍一下你自己"}],
            "max_tokens": 48,
            "temperature": 0,
            "stream": True,
        }
        events = []
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as reply:
            for line in reply.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    if len(events) == 2:  # the first piece of text is out: stop the server
                        process.send_signal(signal.SIGTERM)
        assert events[-1] == "data: [DONE]", "the stream was cut, not drained"
        finish = json.loads(events[-2][5:])["choices"][0]["finish_reason"]
        assert finish == "stop" and len(events) > 4
        code = process.wait(timeout=60)
        assert code in (0, -signal.SIGTERM), f"exit code {code}"
        log = (tmp_path / "server.log").read_text(encoding="utf-8")
        assert "Traceback" not in log and "POST /v1/chat/completions -> 200" in log
        with pytest.raises(httpx.ConnectError):
            httpx.get(base + "/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()


def test_malloc_arenas_are_capped_on_glibc():
    """The server caps glibc's arenas so RSS does not creep with the thread pool."""
    from app.server.app import limit_malloc_arenas

    assert limit_malloc_arenas() is True
