#!/usr/bin/env python3
"""Load test: N concurrent clients mixing sentiment and chat against a local server.

    python scripts/load_test.py --clients 4 --requests 40          # starts its own server
    python scripts/load_test.py --url http://127.0.0.1:8000 ...    # or uses a running one
    python scripts/load_test.py --requests 100000 --seconds 300 --disconnect 0.3   # a soak

Bounded in requests and seconds, loopback only. Prints requests/s, p50/p95 latency per kind,
and errors (which must be 0), as a Markdown table. With --disconnect, that share of chat
requests stream and hang up after the first piece (every other request must still be
answered); for a server it started, it samples the server's RSS every second.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

SENTIMENT = ["这家酒店太棒了", "服务很差", "今天升职了！", "又被老板骂了", "东西还行吧"]
CHAT = ["你好", "推荐一本书", "今天好累", "周末做什么好？"]


def loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    sys.exit(f"Refusing {url}: the load test only targets loopback addresses (127.0.0.0/8, ::1).")


def start_server(model: str | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    if model:
        command += ["--model", model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    sys.exit("The server did not come up.")


def sample_rss(pid: int, samples: list[float], finished: threading.Event) -> None:
    """The server's resident memory (VmRSS, MB) once a second until the run is over."""
    while not finished.wait(1.0):
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                samples.append(int(line.split()[1]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--model", help="model for the server this script starts")
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent clients (default: %(default)s)"
    )
    parser.add_argument(
        "--requests", type=int, default=40, help="total requests (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=300, help="time limit (default: %(default)s)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=32, help="chat reply length (default: %(default)s)"
    )
    parser.add_argument(
        "--disconnect",
        type=float,
        default=0.0,
        help="share of chat requests that hang up mid-stream (default: %(default)s)",
    )
    args = parser.parse_args()

    process = None
    url = args.url
    if url:
        loopback_only(url)
    else:
        process, url = start_server(args.model)
    results: dict[str, list[float]] = {"sentiment": [], "chat": []}
    errors: list[str] = []
    counter = iter(range(args.requests))
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds
    left = [0]  # requests that hung up on purpose
    chooser = random.Random(7)
    rss_mb: list[float] = []
    finished = threading.Event()
    if process:
        threading.Thread(target=sample_rss, args=(process.pid, rss_mb, finished)).start()

    def chat_body(n: int, stream: bool) -> dict:
        return {
            "messages": [{"role": "user", "content": CHAT[n % len(CHAT)]}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": stream,
        }

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                kind = "sentiment" if n % 2 == 0 else "chat"
                with lock:
                    hang_up = kind == "chat" and chooser.random() < args.disconnect
                started = time.perf_counter()
                try:
                    if hang_up:
                        with http.stream(
                            "POST", "/v1/chat/completions", json=chat_body(n, True)
                        ) as r:
                            if r.status_code != 200:
                                raise RuntimeError(f"HTTP {r.status_code}")
                            next(r.iter_lines())  # the first piece, then hang up
                        with lock:
                            left[0] += 1
                        continue
                    if kind == "sentiment":
                        response = http.post(
                            "/v1/sentiment", json={"input": SENTIMENT[n % len(SENTIMENT)]}
                        )
                    else:
                        response = http.post("/v1/chat/completions", json=chat_body(n, False))
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")
                except Exception as error:  # every failure is counted and shown, none is fatal
                    with lock:
                        errors.append(f"{kind}: {error}")
                    continue
                with lock:
                    results[kind].append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    finished.set()
    if process:
        process.terminate()
        process.wait(timeout=30)

    done = sum(len(v) for v in results.values())
    print(
        f"{args.clients} clients, {done + len(errors) + left[0]} requests in {elapsed:.1f} s: "
        f"{done / elapsed:.2f} answered/s, {left[0]} hung up on purpose, {len(errors)} errors\n"
    )
    if rss_mb:
        print(
            f"server RSS: {rss_mb[0]:.0f} MB at the start, {max(rss_mb):.0f} MB at most, "
            f"{rss_mb[-1]:.0f} MB at the end ({len(rss_mb)} samples)"
        )
        # One figure a minute: whether the growth levels off is read from this line.
        print("server RSS by minute, MB: " + ", ".join(f"{v:.0f}" for v in rss_mb[::60]) + "\n")
    print("| kind | requests | p50 ms | p95 ms |\n| --- | ---: | ---: | ---: |")
    for kind, values in results.items():
        if values:
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            print(f"| {kind} | {len(values)} | {statistics.median(values):.0f} | {p95:.0f} |")
    for error in errors[:10]:
        print("error:", error)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
