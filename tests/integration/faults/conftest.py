"""The fault suite's own broker (paused and restarted here, so no other test may share it), the test
ClickHouse, and the pieces every fault test uses: a collector, a worker, a load that retries like a
Segment SDK, and readings of the worker's metrics."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.api.collector import create_app
from streams.api.server import ThreadedServer
from streams.dev import servers
from streams.dev.process import ManagedProcess, free_port
from streams.dev.stack import apply_migrations, clickhouse_client, create_topics
from streams.settings import Settings, Source

WRITE_KEY = "wk_faults_web_0001"
SOURCES = {WRITE_KEY: Source(name="faults-web", channel="web")}
AUTH = ("wk_faults_web_0001", "")


@dataclass
class Broker:
    """A Tansu broker of this suite; ``pause``/``resume`` freeze it (SIGSTOP), ``restart`` is a new
    process on the same port (the memory broker starts empty)."""

    proc: ManagedProcess
    bootstrap: str

    def pause(self) -> None:
        pid = self.proc.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.proc.pid()
        assert pid is not None
        os.kill(pid, signal.SIGCONT)

    def restart(self) -> None:
        self.proc.stop()
        self.proc.start(timeout_s=60)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    state = Path(tempfile.mkdtemp(prefix="omniseg-faults-"))
    port = free_port()
    proc = servers.tansu(state, port)
    try:
        proc.start(timeout_s=60)
        yield Broker(proc, f"127.0.0.1:{port}")
    finally:
        pid = proc.pid()
        if pid is not None:  # a paused broker ignores SIGTERM until it runs again
            os.kill(pid, signal.SIGCONT)
        proc.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def fault_settings(broker: Broker, stack: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    settings = stack.settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"f{suffix}.",
        clickhouse_database=f"faults_{suffix}",
        sink_group=f"sink-{suffix}",
        identity_group=f"identity-{suffix}",
        segments_group=f"segments-{suffix}",
        sources=SOURCES,
        produce_timeout_s=3.0,
    )
    create_topics(settings)
    apply_migrations(settings, report=lambda _msg: None)
    return settings


class Worker:
    """``omniseg worker`` with every stage, its metrics on a free port; stopped by pid."""

    def __init__(
        self, settings: Settings, log: Path, stall_s: float = 8.0, extra_env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log = log
        self.metrics_port = free_port()
        self.stall_s = stall_s
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "OMNISEG_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "OMNISEG_TOPIC_PREFIX": s.topic_prefix,
            "OMNISEG_CLICKHOUSE_HOST": s.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(s.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": s.clickhouse_database,
            "OMNISEG_SINK_GROUP": s.sink_group,
            "OMNISEG_IDENTITY_GROUP": s.identity_group,
            "OMNISEG_SEGMENTS_GROUP": s.segments_group,
            "OMNISEG_SINK_RETRY_MAX_BACKOFF_S": "1",
            "OMNISEG_STAGE_STALL_S": str(self.stall_s),
            # A short stall limit needs checkpoints well within it (Settings refuses otherwise).
            "OMNISEG_SEGMENTS_STATE_FLUSH_S": str(self.stall_s / 4),
            "OMNISEG_WORKER_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--log-level", "info"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> float:
        """SIGTERM; returns the seconds it took to exit (SIGKILL after ``timeout_s``)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return time.monotonic() - started

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def metrics(self) -> dict[tuple[str, str], float]:
        """``(metric, stage) -> value`` from /metrics (status lines as ``status:<name>``)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name_labels, value = line.rsplit(" ", 1)
            name, _, labels = name_labels.partition("{")
            parts = dict(item.split("=", 1) for item in labels.rstrip("}").split(","))
            stage = parts["stage"].strip('"')
            if name == "omniseg_stage_status":
                if float(value) == 1:
                    out[("status", stage)] = 1
                    out[(f"status:{parts['status'].strip(chr(34))}", stage)] = 1
                continue
            out[(name, stage)] = float(value)
        return out


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(settings: Settings, **kwargs: Any) -> Worker:
        worker = Worker(settings, tmp_path / f"worker-{len(made)}.log", **kwargs)
        made.append(worker)
        worker.start()
        return worker

    yield make
    for worker in made:
        worker.stop()


@dataclass
class Load:
    """Posts batches of track calls to the collector, each retried (same messageIds) until a 200,
    as Segment's SDKs do; bounded in batches and time."""

    url: str
    run: str
    batch: int = 20
    pause_s: float = 0.05
    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fault-load", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        number = 0
        deadline = time.monotonic() + 600
        with httpx.Client(timeout=10, auth=AUTH) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                ids = [f"{self.run}-{number + i}" for i in range(self.batch)]
                number += self.batch
                calls = [
                    {
                        "type": "track",
                        "messageId": message_id,
                        "userId": f"{self.run}-user-{index % 37}",
                        "event": "Product Viewed",
                        "properties": {"sku": f"SKU-{index % 11}"},
                    }
                    for index, message_id in enumerate(ids)
                ]
                self.sent.update(ids)
                while time.monotonic() < deadline:  # the batch, until acknowledged
                    try:
                        status = client.post(f"{self.url}/v1/batch", json={"batch": calls}).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.statuses.append(status)
                    if status == 200:
                        self.acked.update(ids)
                        break
                    time.sleep(0.2)
                time.sleep(self.pause_s)


@pytest.fixture
def collector(fault_settings: Settings) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(fault_settings), free_port()) as server:
        yield server


class ReadyWatch:
    """Polls the collector's /ready every 0.25 s and keeps the answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                status = httpx.get(f"{self.url}/ready", timeout=5).status_code
            except httpx.HTTPError:
                status = 0
            self.answers.append((time.monotonic(), status))
            self._stop.wait(0.25)

    def between(self, start: float, end: float) -> list[int]:
        return [status for at, status in self.answers if start <= at <= end]


def stored_ids(settings: Settings, run: str) -> tuple[int, set[str]]:
    """(rows, distinct message ids) of ``run`` in the history (events_dedup)."""
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        rows = client.execute(
            "SELECT message_id FROM events_dedup WHERE startsWith(message_id, %(run)s)", {"run": run + "-"}
        )
    finally:
        client.disconnect()
    return len(rows), {str(row[0]) for row in rows}


def resolved_ids(settings: Settings, run: str) -> set[str]:
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        rows = client.execute(
            "SELECT DISTINCT message_id FROM event_persons WHERE startsWith(message_id, %(run)s)",
            {"run": run + "-"},
        )
    finally:
        client.disconnect()
    return {str(row[0]) for row in rows}


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # a server still recovering
            pass
        time.sleep(every_s)
    return False
