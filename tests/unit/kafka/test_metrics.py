"""The worker's stage reports as Prometheus text, liveness and readiness (streams/kafka/metrics.py)."""

from __future__ import annotations

import httpx

from streams.dev.process import free_port
from streams.kafka.health import Status
from streams.kafka.hosting import StageReport
from streams.kafka.metrics import MetricsServer, health, readiness, render


def report(name: str, status: Status, lag: int | None = 0, reason: str = "") -> StageReport:
    return StageReport(
        name=name,
        status=status,
        reason=reason,
        assigned=4,
        lag=lag,
        group_lag=None,
        seconds_since_progress=1.25,
        records=10,
        sent=9,
        refused=1,
        restarts=2,
    )


def test_every_stage_has_one_current_status_and_its_figures() -> None:
    text = render(
        [report("history-sink", Status.RUNNING, lag=7), report("segments", Status.STALLED, lag=None)]
    )
    lines = text.splitlines()
    assert 'omniseg_stage_status{stage="history-sink",status="running"} 1' in lines
    assert 'omniseg_stage_status{stage="history-sink",status="stalled"} 0' in lines
    assert 'omniseg_stage_status{stage="segments",status="stalled"} 1' in lines
    assert 'omniseg_stage_lag_records{stage="history-sink"} 7' in lines
    assert not any(line.startswith('omniseg_stage_lag_records{stage="segments"}') for line in lines)
    assert 'omniseg_stage_restarts_total{stage="segments"} 2' in lines
    assert "# TYPE omniseg_stage_records_total counter" in lines
    samples = [line for line in lines if line and not line.startswith("#")]
    assert all(len(line.rsplit(" ", 1)) == 2 for line in samples)


def test_liveness_fails_only_for_a_stage_beyond_recovery() -> None:
    assert health([report("a", Status.STALLED), report("b", Status.RESTARTING)])[0] == 200
    status, body = health([report("a", Status.RUNNING), report("b", Status.STUCK, reason="blocked")])
    assert status == 503 and body["stages"] == {"b": "blocked"}


def test_readiness_needs_every_stage_working_but_survives_a_clickhouse_outage() -> None:
    assert readiness([report("a", Status.IDLE), report("b", Status.WAITING_FOR_CLICKHOUSE)])[0] == 200
    assert readiness([report("a", Status.IDLE), report("b", Status.RESTORING)])[0] == 503


def test_the_server_answers_metrics_health_and_ready_over_http() -> None:
    reports = [report("history-sink", Status.STARTING)]
    server = MetricsServer(lambda: reports, "127.0.0.1", free_port())
    server.start()
    try:
        metrics = httpx.get(f"{server.url}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert 'status="starting"} 1' in metrics.text
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{server.url}/ready", timeout=5).status_code == 503
        assert httpx.get(f"{server.url}/nothing", timeout=5).status_code == 404
    finally:
        server.stop()
