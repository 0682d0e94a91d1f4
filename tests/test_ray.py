"""Classifying on a real Ray cluster with the real model: in-process Ray, `--ray local`, and a
two-node cluster on this machine (`ray start --head` plus `ray start --address` with its own
temp dir); an actor killed mid-job, a driver killed mid-job, a node without the model.

Every run is checked against the single-machine labels of the same rows: same label for every
row, every row exactly once, in input order. Rows are short texts of the training rows shipped
in the package, so the whole file takes a few minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tests.conftest import ROOT, write

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """40 short texts of the shipped training rows (short: the runs stay quick)."""
    with gzip.open(ROOT / "data" / "reviews_train.csv.gz", "rt", encoding="utf-8") as file:
        rows = [row["text"] for row in csv.DictReader(file) if 6 <= len(row["text"]) <= 30]
    return rows[:40]


@pytest.fixture(scope="module")
def expected(assistant, texts) -> list[str]:
    """What single-machine classify says of each text."""
    return [verdict.label for verdict in assistant.classify_many(texts)]


TWO_ACTORS = "--actors 2 --threads-per-actor 1"  # the two cores: one each


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "classify", *args]


def _classify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`allinone classify ARGS` as a real process, run to its end."""
    return subprocess.run(
        _cli(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _labels(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _blocks_done(journal: Path) -> list[Path]:
    return sorted(journal.glob("block-*.json")) if journal.is_dir() else []


def _wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended before {what}: {process.stderr.read()}")
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _descendants(pid: int) -> list[int]:
    """Processes below `pid` (ours only: we never signal anything else)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- Ray in this process ------------------------------------------------------------------


@pytest.fixture
def ray_in_process() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_dataset_api_adds_label_and_confidence(
    ray_in_process, tmp_path, model_path, texts, expected
):
    from app.jobs.ray_classify import classify_dataset

    for part in range(2):  # two files: two read tasks, which need CPUs beside the actors
        rows = texts[part * 20 : (part + 1) * 20] + ([" "] if part else [])
        ids = list(range(part * 20, part * 20 + len(rows)))
        pq.write_table(pa.table({"id": ids, "text": rows}), tmp_path / f"part-{part}.parquet")
    dataset = ray.data.read_parquet(str(tmp_path))
    labelled = classify_dataset(dataset, threads_per_actor=1, window=8, model=str(model_path))
    rows = sorted(labelled.take_all(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(texts)))  # the empty text left out
    assert [row["text"] for row in rows] == texts
    assert [row["label"] for row in rows] == expected
    assert all(0.5 <= row["confidence"] <= 1 for row in rows)


# -- `allinone classify --ray local` ------------------------------------------------------


def test_local_ray_labels_a_mixed_folder_in_input_order(tmp_path, texts, expected):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.txt", "\n".join(texts[:10]) + "\n\n")  # an empty row at line 11
    with (folder / "b.csv").open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "text"])
        writer.writerows([i, text] for i, text in enumerate(texts[10:20]))
    lines = [
        json.dumps({"n": i, "text": t}, ensure_ascii=False) for i, t in enumerate(texts[20:30])
    ]
    write(folder / "c.jsonl", "\n".join([*lines[:5], "{not json", *lines[5:]]) + "\n")
    pq.write_table(pa.table({"k": list(range(10)), "text": texts[30:]}), folder / "d.parquet")
    target = tmp_path / "out.jsonl"

    local = f"--ray local {TWO_ACTORS} --window 4 --on-error skip".split()
    result = _classify(str(folder), "-o", str(target), *local)
    assert result.returncode == 0, result.stderr
    rows = _labels(target)
    assert [row["text"] for row in rows] == texts
    assert [row["label"] for row in rows] == expected
    assert list(rows[10]) == ["id", "text", "label", "confidence"] and rows[10]["id"] == "0"
    assert rows[30]["k"] == 0
    assert "Labelled 40 rows" in result.stderr
    assert "a.txt: Skipped 1 empty rows (lines 11)" in result.stderr
    assert "c.jsonl: Skipped bad row, line 6: not valid JSON" in result.stderr
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_an_actor_killed_mid_job_is_restarted_and_every_row_comes_once(tmp_path, texts, expected):
    source = write(tmp_path / "in.txt", "\n".join(texts) + "\n")
    target = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial"
    local = f"--ray local {TWO_ACTORS} --window 2".split()
    run = subprocess.Popen(
        _cli(str(source), "-o", str(target), *local),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _blocks_done(journal), "a first block", run)
        actors = _wait_for(
            lambda: [p for p in _descendants(run.pid) if "MapWorker" in _title(p)],
            "an actor process",
            run,
        )
        os.kill(actors[0], signal.SIGKILL)
        _wait_for(  # Ray starts it again in a new process (and reruns the batch it held)
            lambda: [
                p for p in _descendants(run.pid) if "MapWorker" in _title(p) and p not in actors
            ],
            "the killed actor's restart",
            run,
        )
        _, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, stderr
    rows = _labels(target)
    assert [row["text"] for row in rows] == texts  # every row exactly once, in order
    assert [row["label"] for row in rows] == expected


# -- a two-node cluster on this machine ---------------------------------------------------


@dataclass
class Cluster:
    address: str  # the head's GCS
    client: str  # Ray Client
    env: dict[str, str]
    empty_models: Path  # the second node's models folder: no model there


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ray start --block` in its own session: its processes are its children, and stopping
    it (then its process group) stops exactly this node. (`ray stop` would stop every Ray
    on the machine, other people's too.)"""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with log.open("w") as out:
        node = subprocess.Popen(
            [ray_bin, "start", "--block", "--disable-usage-stats", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_for(lambda: "Ray runtime started" in log.read_text(), f"the node ({log})", timeout=120)
    return node


def _stop(node: subprocess.Popen) -> None:
    """SIGTERM to the node's own process group (a graceful stop), SIGKILL to what is left."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=grace)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Short: Ray's node sockets live under --temp-dir, and an AF_UNIX path may not exceed 107
    # bytes (pytest's /tmp/pytest-of-root/pytest-101/cluster0/... went over it).
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    gcs, client, dashboard, agent_head, agent_worker = _free_ports(5)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # the nodes run this checkout's code
        "RAY_AUTH_MODE": "token",  # a token of its own: no one else's cluster, no one else's key
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    empty_models = base / "no-models"
    empty_models.mkdir()
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(
            _ray_start(
                [
                    "--head",
                    "--port",
                    str(gcs),
                    "--num-cpus",
                    "1",
                    "--temp-dir",
                    str(base / "head"),
                    "--include-dashboard",
                    "false",
                    "--dashboard-port",
                    str(dashboard),
                    "--ray-client-server-port",
                    str(client),
                    "--dashboard-agent-listen-port",
                    str(agent_head),
                ],
                env,
                base / "head.log",
            )
        )
        nodes.append(
            _ray_start(
                [
                    "--address",
                    f"127.0.0.1:{gcs}",
                    "--num-cpus",
                    "1",
                    "--temp-dir",
                    str(base / "worker"),
                    "--dashboard-agent-listen-port",
                    str(agent_worker),
                ],
                {**env, "ALLINONE_MODELS_DIR": str(empty_models)},
                base / "worker.log",
            )
        )
        yield Cluster(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", env, empty_models)
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_without_the_model_is_named(cluster, tmp_path):
    source = write(tmp_path / "in.txt", "很好\n")
    target = str(tmp_path / "out.jsonl")
    result = _classify(str(source), "-o", target, "--ray", cluster.address, env=cluster.env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    assert error[0].count("missing on node") == 1 and str(cluster.empty_models) in error[0]
    assert "allinone download" in error[0]


def test_driver_killed_mid_job_resumes_without_redoing_blocks(
    cluster, tmp_path, model_path, texts, expected
):
    source = write(tmp_path / "in.txt", "\n".join(texts) + "\n")
    target = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial"
    args = [str(source), "-o", str(target), "--model", str(model_path), "--window", "2"]
    first = subprocess.Popen(
        _cli(*args, "--ray", cluster.address, "--actors", "2"),
        cwd=ROOT,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: len(_blocks_done(journal)) >= 3, "three blocks", first)
    finally:
        first.kill()  # kill -9 of the driver
        first.communicate()
    kept = sum(len(json.loads(path.read_text())) for path in _blocks_done(journal))
    assert 6 <= kept < len(texts)

    # The same run again, through Ray Client this time.
    second = _classify(*args, "--ray", cluster.client, env=cluster.env)
    assert second.returncode == 0, second.stderr
    assert f"Labelled {len(texts) - kept} rows ({kept} resumed from an earlier run)" in (
        second.stderr
    )
    rows = _labels(target)
    assert [row["text"] for row in rows] == texts
    assert [row["label"] for row in rows] == expected
