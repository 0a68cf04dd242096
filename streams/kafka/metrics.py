"""The worker's stages over HTTP: ``/metrics`` in the Prometheus text format, ``/health`` and ``/ready``.

Served by a plain threaded HTTP server (not the worker's event loop), so it answers even when the loop
is busy. ``/health`` is 503 once a stage has failed beyond recovery or is stuck (restart the worker);
``/ready`` is 503 while a stage is starting, restoring, stalled or restarting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from streams.kafka.health import Status
from streams.kafka.hosting import StageReport

log = logging.getLogger("streams.kafka.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DEAD = frozenset({Status.FAILED, Status.STUCK})
_READY = frozenset({Status.RUNNING, Status.IDLE, Status.WAITING_FOR_CLICKHOUSE})

# name, type, help, value of a report
_GAUGES: list[tuple[str, str, str, Callable[[StageReport], float | None]]] = [
    ("omniseg_stage_assigned_partitions", "gauge", "Partitions assigned to the stage.", lambda r: r.assigned),
    (
        "omniseg_stage_lag_records",
        "gauge",
        "Records waiting on the stage's assigned partitions (absent until known).",
        lambda r: r.lag,
    ),
    (
        "omniseg_stage_group_lag_records",
        "gauge",
        "Without partitions: records waiting for the stage's whole consumer group.",
        lambda r: r.group_lag,
    ),
    (
        "omniseg_stage_seconds_since_progress",
        "gauge",
        "Seconds since the stage last handled records or was caught up.",
        lambda r: round(r.seconds_since_progress, 3),
    ),
    ("omniseg_stage_records_total", "counter", "Records the stage consumed.", lambda r: r.records),
    ("omniseg_stage_sent_total", "counter", "Records the stage produced.", lambda r: r.sent),
    (
        "omniseg_stage_refused_total",
        "counter",
        "Input records the stage sent to events.invalid.",
        lambda r: r.refused,
    ),
    ("omniseg_stage_restarts_total", "counter", "Times the stage was started again.", lambda r: r.restarts),
]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(reports: Iterable[StageReport]) -> str:
    """The Prometheus text exposition of the stages' reports."""
    reports = list(reports)
    lines = [
        "# HELP omniseg_stage_status The stage's status (1 for the current one).",
        "# TYPE omniseg_stage_status gauge",
    ]
    for report in reports:
        for status in Status:
            current = 1 if report.status is status else 0
            lines.append(f'omniseg_stage_status{{stage="{_label(report.name)}",status="{status}"}} {current}')
    for name, kind, help_text, value_of in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for report in reports:
            value = value_of(report)
            if value is not None:
                lines.append(f'{name}{{stage="{_label(report.name)}"}} {value}')
    return "\n".join(lines) + "\n"


def health(reports: Iterable[StageReport]) -> tuple[int, dict[str, object]]:
    """Liveness: 503 when a stage failed beyond recovery or is stuck."""
    dead = {r.name: r.reason for r in reports if r.status in _DEAD}
    return (503, {"status": "unavailable", "stages": dead}) if dead else (200, {"status": "ok"})


def readiness(reports: Iterable[StageReport]) -> tuple[int, dict[str, object]]:
    """Readiness: 200 when every stage runs (or waits for ClickHouse, which it survives)."""
    stages = {r.name: {"status": str(r.status), "reason": r.reason, "lag": r.lag} for r in reports}
    ready = all(entry["status"] in _READY for entry in stages.values())
    return (200 if ready else 503), {"status": "ok" if ready else "unavailable", "stages": stages}


class MetricsServer:
    """Serves the reports of ``source`` on ``host:port`` from a daemon thread."""

    def __init__(self, source: Callable[[], list[StageReport]], host: str, port: int) -> None:
        handler = _handler(source)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="worker-metrics", daemon=True)
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()
        log.info("worker metrics at %s/metrics", self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(source: Callable[[], list[StageReport]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, render(source()).encode(), CONTENT_TYPE)
            elif path in ("/health", "/ready"):
                status, body = (health if path == "/health" else readiness)(source())
                self._send(status, orjson.dumps(body), "application/json")
            else:
                self._send(
                    404, b'{"detail":"not found; try /metrics, /health or /ready"}', "application/json"
                )

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would flood the worker's log

    return Handler
