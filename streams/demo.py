"""``omniseg demo``: the main job on the local stack, end to end, with real output.

Starts the local stack, a worker and the collector (as real processes, like production), posts a
generated four-channel stream through the collector's ``/v1/batch`` with each channel's write key, waits
until ClickHouse holds every accepted event, prints what landed and a few KPI queries, and stops the
processes it started. The stack keeps running so the data can be queried; ``omniseg dev down`` stops it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from streams.dev.probes import http_healthy
from streams.dev.process import ManagedProcess, StackError, free_port, port_is_free
from streams.dev.stack import LocalStack, clickhouse_client
from streams.domain.simulation import generate
from streams.settings import Channel, Settings
from streams.warehouse import kpi

Report = Callable[[str], None]
_BATCH = 250


@dataclass
class DemoResult:
    run_id: str
    sent: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejected: int = 0
    landed: int = 0
    seconds_to_land: float = 0.0


def run_demo(
    settings: Settings,
    customers: int,
    days: int,
    seed: int,
    report: Report = print,
    land_timeout_s: float = 180.0,
) -> DemoResult:
    stack = LocalStack(settings)
    report("== 1. local stack")
    stack.up(report=report)
    settings = stack.write_env_file()
    env = {**os.environ, "OMNISEG_ENV_FILE": str(stack.env_file)}
    port = settings.collector_port if port_is_free(settings.collector_port) else free_port()
    env["OMNISEG_COLLECTOR_PORT"] = str(port)
    worker = _process(stack.state_dir, "demo-worker", ["worker", "--log-level", "warning"], env)
    collector = _process(
        stack.state_dir, "demo-collector", ["collector", "serve", "--log-level", "warning"], env, port
    )
    _catalog_and_segments(settings, report)
    try:
        report("== 2. worker and collector")
        report(f"worker started (pid {worker.start(60)}, log {worker.log_file})")
        report(f"collector on http://127.0.0.1:{port} (pid {collector.start(60)}, log {collector.log_file})")
        report(f"== 3. sending a generated stream: {customers} customers over {days} days")
        result = _send(settings, port, customers, days, seed, report)
        report(f"== 4. waiting for ClickHouse ({result.accepted:,} accepted events)")
        _wait_until_landed(settings, result, land_timeout_s)
        report(f"all {result.landed:,} events visible in ClickHouse after {result.seconds_to_land:.1f} s")
        report("== 5. what landed")
        _print_results(settings, result, report)
        report("\n== 6. segments (real-time profiles -> segments.changes -> ClickHouse)")
        _wait_for_segments(settings, land_timeout_s)
        _print_segments(settings, report)
        return result
    finally:
        collector.stop()
        worker.stop()
        report(
            "\nworker and collector stopped; the stack is up for queries unless --down was given "
            f"(clickhouse-client --port {settings.clickhouse_port} -d {settings.clickhouse_database}). "
            "Stop it with: .venv/bin/omniseg dev down"
        )


SEGMENTS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "segments"


def _catalog_and_segments(settings: Settings, report: Report) -> None:
    """The product catalog and the example segment definitions, published before events flow."""
    from streams.agents.segment_definitions import apply_definitions
    from streams.catalog_import import EXAMPLE_CATALOG, import_catalog

    imported = import_catalog(settings, EXAMPLE_CATALOG)
    report(f"product catalog: {imported.products:,} products from {EXAMPLE_CATALOG.name} -> products.catalog")
    if SEGMENTS_DIR.is_dir() and any(SEGMENTS_DIR.glob("*.yaml")):
        plan = apply_definitions(settings, SEGMENTS_DIR)
        report(f"segment definitions from {SEGMENTS_DIR.name}/: {plan.summary()}")


def _wait_for_segments(settings: Settings, timeout_s: float) -> None:
    """Until the segment changes in ClickHouse stop growing (the stage and its sink caught up)."""
    client = clickhouse_client(settings, settings.clickhouse_database)
    started, last, stable_since = time.monotonic(), -1, time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            count = int(client.execute("SELECT count() FROM segment_changes")[0][0])
            if count != last:
                last, stable_since = count, time.monotonic()
            elif count > 0 and time.monotonic() - stable_since > 4:
                return
            time.sleep(0.5)
    finally:
        client.disconnect()


def _print_segments(settings: Settings, report: Report) -> None:
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        sizes = kpi.Table(
            ["segment", "members now", "enters", "exits"],
            [
                tuple(row)
                for row in client.execute(
                    "SELECT segment_id, uniqExactIf((person_id, subject), cur), countIf(change = 'entered'), "
                    "countIf(change = 'exited') FROM (SELECT *, (segment_id, subject, person_id) IN "
                    "(SELECT segment_id, subject, person_id FROM segment_membership_current) AS cur "
                    "FROM segment_changes FINAL) GROUP BY segment_id ORDER BY segment_id"
                )
            ],
        )
        report(f"\nSegment membership (segment_changes, segment_membership_current)\n{sizes.render()}")
        report(f"\nKPI: segments\n{kpi.run(client, 'segments_count').render()}")
        full = kpi.run(client, "personalised_traffic_share")
        share = kpi.Table(full.columns, full.rows[-8:])
        report(f"\nKPI: share of traffic in personalised segments (latest days)\n{share.render()}")
        sample = client.execute(
            "SELECT person_id, segment_id, subject, change, seq, trigger, reason, email FROM segment_changes "
            "WHERE email != '' ORDER BY at DESC LIMIT 3"
        )
        columns = ["person", "segment", "subject", "change", "seq", "trigger", "reason", "email"]
        table = kpi.Table(columns, sample)
        report(f"\nWhat an email tool receives on segments.changes (latest)\n{table.render()}")
    finally:
        client.disconnect()


def _process(
    state_dir: Path, name: str, args: list[str], env: dict[str, str], port: int | None = None
) -> ManagedProcess:
    return ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "streams.cli", *args],
        state_dir=state_dir,
        ports=[port] if port else [],
        is_ready=(lambda: http_healthy(port)) if port else (lambda: True),
        env=env,
    )


def _send(settings: Settings, port: int, customers: int, days: int, seed: int, report: Report) -> DemoResult:
    keys: dict[Channel, str] = {source.channel: key for key, source in settings.sources.items()}
    result = DemoResult(run_id=uuid.uuid4().hex[:8])
    start = datetime.now(UTC) - timedelta(days=days)
    pending: dict[Channel, list[dict[str, Any]]] = {channel: [] for channel in keys}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    with tqdm(desc="events sent", unit="ev", file=sys.stderr) as bar:
        for channel, call in _tagged(
            generate(seed=seed, customers=customers, days=days, start=start), result
        ):
            pending[channel].append(call)
            if len(pending[channel]) >= _BATCH:
                _post(conn, keys[channel], pending[channel], result)
                bar.update(len(pending[channel]))
                pending[channel] = []
        for channel, calls in pending.items():
            if calls:
                _post(conn, keys[channel], calls, result)
                bar.update(len(calls))
        # Bad input is part of real life: one batch with broken items, which go to events.invalid.
        _post(conn, keys["web"], _broken_calls(result.run_id), result)
    conn.close()
    report(
        "sent per channel: "
        + ", ".join(f"{channel} {count:,}" for channel, count in sorted(result.sent.items()))
        + f"; accepted {result.accepted:,}, rejected {result.rejected} (deliberately broken items)"
    )
    return result


def _tagged(
    calls: Iterator[tuple[Channel, dict[str, Any]]], result: DemoResult
) -> Iterator[tuple[Channel, dict[str, Any]]]:
    for channel, call in calls:
        call = {**call, "messageId": f"demo-{result.run_id}-{call['messageId']}"}
        result.sent[channel] += 1
        yield channel, call


def _broken_calls(run_id: str) -> list[dict[str, Any]]:
    base = {"timestamp": datetime.now(UTC).isoformat()}
    return [
        {**base, "type": "track", "event": "Product Viewed", "messageId": f"demo-{run_id}-bad-1"},
        {
            **base,
            "type": "track",
            "anonymousId": "a-1",
            "properties": "oops",
            "messageId": f"demo-{run_id}-bad-2",
        },
        {**base, "type": "purchase", "anonymousId": "a-1", "messageId": f"demo-{run_id}-bad-3"},
    ]


def _post(
    conn: http.client.HTTPConnection, key: str, calls: list[dict[str, Any]], result: DemoResult
) -> None:
    auth = base64.b64encode(f"{key}:".encode()).decode()
    body = orjson.dumps({"batch": calls})
    for attempt in range(5):
        try:
            conn.request(
                "POST",
                "/v1/batch",
                body=body,
                headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            payload = orjson.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException):
            conn.close()
            time.sleep(0.5 * (attempt + 1))
            continue
        if response.status == 200:
            result.accepted += int(payload.get("accepted", len(calls)))
            result.rejected += int(payload.get("rejected", 0))
            return
        if response.status < 500:
            raise StackError(f"collector refused a batch ({response.status}): {payload}")
        time.sleep(0.5 * (attempt + 1))
    raise StackError("collector kept failing (5xx); see its log in .omniseg/demo-collector.log")


def _wait_until_landed(settings: Settings, result: DemoResult, timeout_s: float) -> None:
    client = clickhouse_client(settings, settings.clickhouse_database)
    query = "SELECT count() FROM events_dedup WHERE message_id LIKE %(prefix)s"
    started = time.monotonic()
    with tqdm(total=result.accepted, desc="landed in ClickHouse", unit="ev", file=sys.stderr) as bar:
        while True:
            landed = int(client.execute(query, {"prefix": f"demo-{result.run_id}-%"})[0][0])
            bar.update(landed - bar.n)
            if landed >= result.accepted:
                break
            if time.monotonic() - started > timeout_s:
                raise StackError(
                    f"only {landed:,} of {result.accepted:,} events reached ClickHouse "
                    f"within {timeout_s:.0f} s; see .omniseg/demo-worker.log"
                )
            time.sleep(0.5)
    result.landed = landed
    result.seconds_to_land = time.monotonic() - started
    client.disconnect()


def _print_results(settings: Settings, result: DemoResult, report: Report) -> None:
    client = clickhouse_client(settings, settings.clickhouse_database)
    titles = {
        "events_by_channel": "Events per channel (events_dedup)",
        "funnel_by_channel": "KPI: view -> cart -> order funnel per channel, in persons, within a day",
        "revenue_by_channel": "KPI: orders, returns and revenue per channel (net of returns)",
        "email_engagement": "KPI: email engagement per campaign, in persons",
    }
    for name, title in titles.items():
        report(f"\n{title}\n{kpi.run(client, name).render()}")
    invalid = kpi.Table(
        ["stage", "reason"],
        [
            tuple(row)
            for row in client.execute(
                "SELECT stage, reason FROM invalid_events WHERE position != '' "
                "ORDER BY received_at DESC LIMIT 5"
            )
        ],
    )
    report(f"\nRejected records (events.invalid -> invalid_events), latest\n{invalid.render()}")
    with contextlib.suppress(Exception):
        client.disconnect()
