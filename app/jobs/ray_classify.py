"""Classify past one machine: Ray Data's `map_batches` over an actor pool, one model per actor.

Classification is embarrassingly parallel, so nothing here schedules: Ray Data cuts the rows into
batches and feeds them to a pool of actors; each actor loads the GGUF once and labels its batches
with the single-machine path (`label_window` over `Assistant.classify_many`), so every label is
the one `allinone classify` gives.

Threads. Ray reserves CPUs for an actor (and sets OMP_NUM_THREADS), but llama.cpp takes its
thread count from its own parameter only; left alone it would run its default on every actor and
oversubscribe the node (on 2 cores two busy llama.cpp processes run ~6x slower). So each actor
reads the CPUs Ray gave it and loads the model with exactly that many threads.

Faults. The pool's actors restart when they die and a batch whose actor was killed runs again
(Ray Data's defaults for actor pools: `max_restarts=-1`, `max_task_retries=-1`); an output batch
exists only once its task has finished, so a kill -9 costs the batch in flight and never yields
a row twice (tests/test_ray.py kills one mid-job). The driver keeps a journal of finished blocks
(app/jobs/corpus.py): a driver killed and run again goes on from the blocks it has.

Where the Dataset runs. Ray Data's executor cannot run in a Ray Client (`ray://`) driver, so
`classify_corpus` hands the Dataset to a small coordinator actor (0 CPUs) on the cluster and
polls it for finished rows; the same path serves every address. The model must be on every
node: a task pinned to each node resolves it there first, and a node without it is named in a
one-line error (we do not copy 469 MB onto nodes behind the user's back).

`ray` is imported here only, and only when called: the core and the CLI work without the extra.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from app.errors import AllInOneError, ClusterError, ModelNotFound
from app.jobs.corpus import (
    BlockJournal,
    Plan,
    Work,
    check_target,
    journal_header,
    make_plan,
    write_outputs,
)
from app.jobs.files import WINDOW, OnError, Row, Summary, label_functions, label_window

INSTALL_HINT = 'Classifying on Ray needs its extra: pip install "allinone[ray]"'
# Settings an actor takes from the driver; its threads come from Ray, not from here.
ACTOR_SETTINGS = (
    *("model", "models_dir", "cache_dir", "prompts"),
    *("n_ctx", "n_batch", "extra_buffers", "seed", "verbose"),
)
POLL_SECONDS = 0.5
CLIENT_ATTEMPTS = 3  # Ray Client joins; see _server_start_failed
CLIENT_RETRY_SECONDS = 2.0
Policy = Literal["stop", "skip", "keep"]  # keep: every row, with a `problem` column (the CLI)


def import_ray() -> Any:
    """The ray module with Ray Data, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the part we need)
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start Ray on this machine for "local"."""
    ray = import_ray()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        return
    _check_reachable(address)
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, **quiet)
            return
        except (ConnectionError, RuntimeError, ValueError) as error:
            if attempt < CLIENT_ATTEMPTS and _server_start_failed(error):
                ray.shutdown()  # drop the half-made client before asking again
                time.sleep(CLIENT_RETRY_SECONDS * attempt)
                continue
            raise ClusterError(
                f"Cannot join the Ray cluster at {address!r}: {_join_reason(error)}. Check the "
                "address (see `ray status` on the head node) and its authentication token."
            ) from None


def _server_start_failed(error: BaseException) -> bool:
    """Ray Client's head starts one server process per client; on a busy head that start
    can fail once and work the next time, so this failure is worth asking again."""
    return isinstance(error, ConnectionAbortedError) and "Initialization failure" in str(error)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: Ray retries an unreachable GCS for a long time."""
    if address == "auto":
        return  # Ray finds the local head itself, and says so quickly when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(
            f"--ray {address!r}: give local, auto, HOST:PORT (the head's GCS, e.g. "
            "10.0.0.5:6379) or ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)."
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ClusterError(
            f"Cannot reach a Ray cluster at {address} ({error.strerror or error}). Start one "
            "with `ray start --head`, or check the address and port."
        ) from None


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(error).__name__


def _join_reason(error: BaseException) -> str:
    """The first line of Ray's message, plus its last when the middle is a server traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    reason = lines[0].rstrip(".:")
    return f"{reason}: {lines[-1].rstrip('.')}" if len(lines) > 1 else reason


def _actor_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings an actor loads the model with; paths made absolute (an actor's working
    folder is not the driver's)."""
    given = {k: v for k, v in settings.items() if v is not None and k in ACTOR_SETTINGS}
    for key in ("models_dir", "cache_dir", "prompts"):
        if key in given:
            given[key] = str(Path(given[key]).expanduser().resolve())
    model = given.get("model")
    if model and Path(str(model)).expanduser().exists():
        given["model"] = str(Path(str(model)).expanduser().resolve())
    return given


def _node() -> str:
    """This process's node, as an error should name it."""
    ray = import_ray()
    node_id = ray.get_runtime_context().get_node_id()
    ip = ray.util.get_node_ip_address()
    return f"node {ip} ({socket.gethostname()}, id {node_id[:8]})"


def _model_on_this_node(settings: dict[str, Any]) -> tuple[str, str | None, int, str | None]:
    """(node, model path, size, problem) as this node resolves the model."""
    from app.config import load_settings
    from app.models import resolve_model_path

    try:
        path = resolve_model_path(load_settings(**settings))
        return _node(), str(path), path.stat().st_size, None
    except AllInOneError as error:
        return _node(), None, 0, str(error)


def check_model_on_nodes(settings: dict[str, Any], timeout: float = 300) -> None:
    """Resolve the model on every node with CPUs (a task pinned to each): a ModelNotFound that
    names the nodes without it, or says which hold another file (name or size)."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_model_on_this_node)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(settings)
        for node in nodes
    ]
    try:
        answers = ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(f"The nodes did not answer within {timeout:.0f} s.") from None
    missing = [f"{node}: {problem.rstrip('.')}" for node, _, _, problem in answers if problem]
    if missing:
        raise ModelNotFound(
            f"The model is missing on {'; '.join(missing)}. Every node needs the same GGUF: run "
            "`allinone download` on that node, or put the file at the same path there "
            "(--model PATH)."
        )
    if len({(Path(str(path)).name, size) for _, path, size, _ in answers}) > 1:
        where = "; ".join(f"{node}: {path} ({size} bytes)" for node, path, size, _ in answers)
        raise ModelNotFound(
            f"The nodes hold different models ({where}); labels would differ. Give every node "
            "the same GGUF (--model PATH)."
        )


class Labeller:
    """The map_batches callable: one per actor, the model loaded once, with llama.cpp's threads
    set to the CPUs Ray gave the actor."""

    def __init__(
        self,
        settings: dict[str, Any],
        role: str | None = None,
        decode: str = "auto",
        on_error: Policy = "stop",
        text_column: str = "text",
    ) -> None:
        from app.roles.assistant import Assistant

        ray = import_ray()
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = max(1, math.floor(cpus))
        try:
            assistant = Assistant.load(**settings, n_threads=self.threads)
        except AllInOneError as error:
            raise type(error)(f"On {_node()}: {error}") from None
        self.classify, self.classify_many = label_functions(assistant, role, decode)
        self.on_error = on_error
        self.text_column = text_column

    def __call__(self, batch: Any) -> Any:  # pyarrow.Table -> pyarrow.Table
        import pyarrow as pa

        from app.errors import InputError

        texts = batch.column(self.text_column).to_pylist()
        rows = [
            Row(i + 1, {}, text or "")
            if text is None or isinstance(text, str)
            else Row(i + 1, {}, "", "the text column must hold strings")
            for i, text in enumerate(texts)
        ]
        results = list(
            label_window(
                rows, self.classify, self.classify_many, source=Path("batch"), on_error="skip"
            )
        )
        if self.on_error == "stop":
            for text, result in zip(texts, results, strict=True):
                if isinstance(result, str):
                    raise InputError(f"The row whose text starts {str(text)[:30]!r}: {result}")
        labels = [r[0] if isinstance(r, tuple) else None for r in results]
        confidences = [r[1] if isinstance(r, tuple) else None for r in results]
        out = batch.append_column("label", pa.array(labels, pa.string()))
        out = out.append_column("confidence", pa.array(confidences, pa.float64()))
        if self.on_error == "keep":  # the CLI's driver applies the file policy itself
            problems = [r if isinstance(r, str) else None for r in results]
            return out.drop_columns([self.text_column]).append_column(
                "problem", pa.array(problems, pa.string())
            )
        return out.filter(pa.array([label is not None for label in labels]))


def classify_dataset(
    dataset: Any,
    *,
    text_column: str = "text",
    role: str | None = None,
    actors: int | None = None,
    threads_per_actor: int = 1,
    window: int = WINDOW,
    on_error: Policy = "stop",
    decode: str = "auto",
    check_nodes: bool = True,
    **settings: Any,
) -> Any:
    """`dataset` (a ray.data.Dataset with a text column) with `label` and `confidence` added.

    Lazy, like any Dataset transform: write it, iterate it, or chain more steps. Empty texts are
    left out, as `allinone classify FILE` leaves empty rows out; a text the model refuses (too
    long for the context) fails the run under on_error="stop" and is left out under "skip".
    `actors=None` is a pool that grows from 1 to as many actors as the cluster's CPUs hold; a
    number is a pool of that size (then leave a CPU free for a `read_*` source's read tasks,
    or the actors hold every CPU and the reads never run). `settings` are Assistant.load's
    (model, n_ctx, prompts, ...). Needs `ray.init()` first.
    """
    ray = import_ray()
    given = _actor_settings(settings)
    if actors:
        pool_size(actors, threads_per_actor)  # that many fit, or say so now
    if check_nodes:
        check_model_on_nodes(given)
    if actors:
        pool = ray.data.ActorPoolStrategy(size=actors)
    else:
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=pool_size(None, threads_per_actor))
    return dataset.map_batches(
        Labeller,
        fn_constructor_kwargs={
            "settings": given,
            "role": role,
            "decode": decode,
            "on_error": on_error,
            "text_column": text_column,
        },
        batch_size=window,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=threads_per_actor,
        # Ray Data's actor pools restart a dead actor and rerun the batch it held by default
        # (max_restarts=-1, max_task_retries=-1); Ray 2.60 deprecates passing them here.
    )


def pool_size(actors: int | None, threads_per_actor: int) -> int:
    """`actors`, checked against the cluster's CPUs; None: as many as they hold."""
    ray = import_ray()
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if actors is None:
        return max(1, cpus // threads_per_actor)
    if actors * threads_per_actor > cpus:
        raise ClusterError(
            f"{actors} actor(s) x {threads_per_actor} thread(s) need "
            f"{actors * threads_per_actor} CPUs; the cluster has {cpus}. Lower --actors or "
            "--threads-per-actor."
        )
    return actors


class Coordinator:
    """Runs the Dataset on the cluster (0 CPUs) and hands finished rows to the driver's polls."""

    def __init__(self, blocks: list[Any], options: dict[str, Any]) -> None:
        self._rows: list[dict[str, Any]] = []
        self._error: str | None = None
        self._finished = False
        self._lock = threading.Lock()
        threading.Thread(target=self._run, args=(blocks, options), daemon=True).start()

    def _run(self, blocks: list[Any], options: dict[str, Any]) -> None:
        ray = import_ray()
        try:
            dataset = classify_dataset(
                ray.data.from_arrow_refs(blocks), on_error="keep", check_nodes=False, **options
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                with self._lock:
                    self._rows.extend(batch.to_pylist())
        except Exception as error:  # the driver turns it into one line
            with self._lock:
                self._error = reason(error)
        finally:
            with self._lock:
                self._finished = True

    def poll(self) -> tuple[list[dict[str, Any]], str | None, bool]:
        """Rows finished since the last poll, the run's error if it failed, and whether it
        has ended."""
        with self._lock:
            rows, self._rows = self._rows, []
            return rows, self._error, self._finished


def reason(error: BaseException) -> str:
    """What went wrong, in one line: our own error if one is inside Ray's wrappers."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AllInOneError):
            return str(current)
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return _first_line(error)


def classify_corpus(
    source: Path,
    target: Path,
    *,
    address: str | None = None,
    settings: dict[str, Any] | None = None,
    role: str | None = None,
    decode: str = "auto",
    actors: int | None = None,
    threads_per_actor: int = 1,
    window: int = WINDOW,
    on_error: OnError = "stop",
    restart: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Plan, Summary]:
    """Label a file or folder into `target` on a Ray cluster, resuming a journal.

    `address` as `connect` takes it (joined only once the inputs are read and there is work
    left, and left at the end); None: the cluster this process has already joined.
    `progress(done, total)` follows the rows. Returns the plan (files, per-file summaries with
    the empty and bad rows) and the whole run's Summary.
    """
    plan = make_plan(source, window, on_error)
    check_target(plan, target)
    journal = BlockJournal(
        target.with_name(target.name + ".partial"),
        journal_header(plan, window=window, role=role, decode=decode),
        restart=restart,
    )
    done = journal.done()
    results = {entry["row"]: entry for entries in done.values() for entry in entries}
    _stop_at_bad(plan, results.values(), on_error)
    summary = Summary(resumed=len(results))
    todo = [work for work in plan.work if work.block not in done]
    if progress:
        progress(len(results), len(plan.work))
    if todo:
        blocks = {work.row: work.block for work in todo}
        pending: dict[int, list[dict[str, Any]]] = {}
        if address is not None:
            connect(address)
        try:
            given = _actor_settings(settings or {})
            check_model_on_nodes(given)
            options = {
                **given,
                "role": role,
                "decode": decode,
                "actors": pool_size(actors, threads_per_actor),
                "threads_per_actor": threads_per_actor,
                "window": window,
            }
            for entry in _label_on_cluster(todo, options):
                results[entry["row"]] = entry
                if "label" in entry:
                    summary.done += 1
                block = blocks[entry["row"]]
                pending.setdefault(block, []).append(entry)
                if len(pending[block]) == plan.block_sizes[block]:
                    journal.write(block, sorted(pending.pop(block), key=_row))
                _stop_at_bad(plan, [entry], on_error)
                if progress:
                    progress(len(results), len(plan.work))
        finally:
            if address is not None:
                shutdown()
    for entry in results.values():
        if "bad" in entry:
            file_summary = plan.summaries[entry["file"]]
            bad = (*file_summary.bad_rows, (entry["line"], entry["bad"]))
            file_summary.bad_rows = tuple(sorted(bad))
    write_outputs(plan, target, results)
    journal.remove()
    summary.output = target
    return plan, summary


def _label_on_cluster(todo: list[Work], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Journal entries ({row, file, line} + label and confidence, or bad) as the coordinator
    finishes rows, in no particular order."""
    ray = import_ray()
    coordinator = ray.remote(num_cpus=0)(Coordinator).remote(_blocks(todo), options)
    where = {work.row: work for work in todo}
    try:
        while True:
            try:
                rows, error, finished = ray.get(coordinator.poll.remote())
            except ray.exceptions.RayError as failure:
                raise ClusterError(f"The run on the cluster failed: {reason(failure)}") from None
            for row in rows:
                work = where[row["row"]]
                entry: dict[str, Any] = {"row": work.row, "file": work.file, "line": work.line}
                if row["problem"]:
                    entry["bad"] = row["problem"]
                if row["label"] is not None:
                    entry |= {"label": row["label"], "confidence": round(row["confidence"], 4)}
                yield entry
            if error:
                raise ClusterError(f"The run on the cluster failed: {error}")
            if finished:
                return
            time.sleep(POLL_SECONDS)
    finally:  # a run stopped early (a bad row, Ctrl-C) frees its actors now
        ray.kill(coordinator)


def _row(entry: dict[str, Any]) -> int:
    return int(entry["row"])


def _stop_at_bad(plan: Plan, entries: Any, on_error: OnError) -> None:
    """Under on_error="stop", the first bad row (in row order) ends the run, named."""
    if on_error != "stop":
        return
    bad = sorted((e for e in entries if "bad" in e), key=_row)
    if bad:
        raise plan.bad_row(bad[0]["file"], bad[0]["line"], bad[0]["bad"])


def _blocks(todo: list[Any]) -> list[Any]:
    """The rows to label as one Arrow table per block, put in the object store."""
    import pyarrow as pa

    ray = import_ray()
    tables: dict[int, list[Any]] = {}
    for work in todo:
        tables.setdefault(work.block, []).append(work)
    return [
        ray.put(
            pa.table(
                {
                    "row": pa.array([w.row for w in works], pa.int64()),
                    "text": pa.array([w.text for w in works], pa.string()),
                }
            )
        )
        for works in tables.values()
    ]


def shutdown() -> None:
    """Leave the cluster (and stop Ray if this process started it)."""
    if "ray" in sys.modules:  # never import ray just to shut it down
        import ray

        ray.shutdown()
