"""``omniseg demo``: the main job on the local stack, end to end, with real output.

Starts the local stack, a worker and the collector (as real processes, like production), publishes the
example catalog and segments, then posts a generated four-channel stream through the collector's
``/v1/batch`` with each channel's write key in two parts, the way a shop that adopts omniseg sees it:

- **history**: the days before today, sent at full speed with their own event times (a backfill). The
  segment stage evaluates them as they arrive, so membership starts now, after those events.
- **live**: today's traffic, replayed over ``live_seconds`` with event time = the moment it is sent,
  while the segments are live, so the KPIs see traffic inside membership spells.

It waits until ClickHouse holds every accepted event and the segment changes, prints what landed and
KPI queries, and stops the collector. The stack and the worker keep running (so ``omniseg import`` and
queries work); ``omniseg dev down`` stops them. The same seed, customers and days on the same date give
the same messageIds, so a re-run adds nothing to the history.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from streams.dev.demo_audiences import DESTINATIONS_DIR, demo_destinations, run_ad_platform_tour
from streams.dev.demo_usecase import run_usecase_act
from streams.dev.probes import http_healthy
from streams.dev.process import ManagedProcess, StackError, free_port, port_is_free
from streams.dev.stack import LocalStack, clickhouse_client
from streams.domain.simulation import generate, stream_id
from streams.settings import Channel, Settings
from streams.stages.audiences.configuration import apply_destinations
from streams.warehouse import kpi

Report = Callable[[str], None]
_BATCH = 250


@dataclass
class DemoResult:
    stream_id: str
    sent: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejected: int = 0
    landed: int = 0
    seconds_to_land: float = 0.0
    live_events: int = 0
    worker_pid: int | None = None
    started_at: float = field(default_factory=time.time)  # when sending began (epoch seconds)


def run_demo(
    settings: Settings,
    customers: int,
    days: int,
    seed: int,
    report: Report = print,
    land_timeout_s: float = 180.0,
    live_seconds: float = 30.0,
    keep_worker: bool = True,
    down: bool = False,
    usecase_shoppers: int = 3000,
) -> DemoResult:
    stack = LocalStack(settings)
    report("== 1. local stack")
    stack.up(report=report)
    settings = stack.write_env_file()
    env = {**os.environ, "OMNISEG_ENV_FILE": str(stack.env_file)}
    port = settings.collector_port if port_is_free(settings.collector_port) else free_port()
    env["OMNISEG_COLLECTOR_PORT"] = str(port)
    collector = _process(
        stack.state_dir, "demo-collector", ["collector", "serve", "--log-level", "warning"], env, port
    )
    worker_log = stack.worker().log_file
    _catalog_and_segments(settings, report)
    destinations, destination_keys = demo_destinations(stack.state_dir)
    applied = apply_destinations(settings, destinations)
    report(f"destinations from {DESTINATIONS_DIR.name}/ (with this run's API keys): {applied.summary()}")
    api_port = settings.api_port if port_is_free(settings.api_port) else free_port()
    api = _process(
        stack.state_dir,
        "demo-api",
        ["api", "serve", "--port", str(api_port)],
        {**env, "OMNISEG_DESTINATIONS_DIR": str(destinations)},
        api_port,
    )
    finished = False
    result = DemoResult(stream_id=stream_id(seed, customers, days))
    try:
        report("== 2. worker and collector")
        result.worker_pid = stack.start_worker(report=report)
        report(f"collector on http://127.0.0.1:{port} (pid {collector.start(60)}, log {collector.log_file})")
        report(f"read API on http://127.0.0.1:{api_port} (pid {api.start(60)}, log {api.log_file})")
        now = datetime.now(UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        calls = generate(seed=seed, customers=customers, days=days, start=today - timedelta(days=days - 1))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        history_days = (
            f"{(today - timedelta(days=days - 1)):%Y-%m-%d} to {(today - timedelta(days=1)):%Y-%m-%d}"
        )
        report(
            f"== 3. history: {customers} customers, {days - 1} days ({history_days}), sent at full speed "
            "with their event times"
            if days > 1
            else "== 3. history: none (--days 1)"
        )
        live = _send_history(conn, settings, calls, today, result, report)
        if result.accepted:
            # Live traffic must find the memberships the history earned, as it would in a shop.
            _wait_until_landed(settings, result, land_timeout_s, worker_log)
            _wait_for_segments(settings, land_timeout_s)
        report(
            f"== 4. live: today's {len(live):,} events, sent over {live_seconds:.0f} s with event time = "
            "when they are sent, while the segments are live"
        )
        _send_live(conn, settings, live, live_seconds, result)
        # Bad input is part of real life: one batch with broken items, which go to events.invalid.
        _post(conn, _keys(settings)["web"], _broken_calls(result.stream_id), result)
        conn.close()
        report(
            "sent per channel: "
            + ", ".join(f"{channel} {count:,}" for channel, count in sorted(result.sent.items()))
            + f"; accepted {result.accepted:,}, rejected {result.rejected} (deliberately broken items)"
        )
        report(f"== 5. waiting for ClickHouse ({result.accepted:,} accepted events)")
        _wait_until_landed(settings, result, land_timeout_s, worker_log)
        report(f"all {result.landed:,} events visible in ClickHouse after {result.seconds_to_land:.1f} s")
        report("== 6. what landed")
        _print_results(settings, result, report)
        report("\n== 7. segments (real-time profiles -> segments.changes -> ClickHouse)")
        _wait_for_segments(settings, land_timeout_s)
        _print_segments(settings, report)
        report("\n== 8. ad platforms (audiences pulled over the API as snapshot + deltas)")
        tour = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        run_ad_platform_tour(
            api_port,
            destination_keys["google-ads"],
            lambda calls: _post(tour, _keys(settings)["web"], calls, result),
            report,
        )
        tour.close()
        report("\n== 9. a use case measured like an experiment (control group, pre-registered KPIs)")
        act = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        html = run_usecase_act(
            settings,
            lambda calls: _post(act, _keys(settings)["web"], calls, result),
            report,
            shoppers=usecase_shoppers,
            seed=seed,
        )
        act.close()
        report(f"\nHTML report (open it in a browser; it needs no network): {html}")
        finished = True
        return result
    finally:
        collector.stop()
        api.stop()
        if down:
            stack.down(report=report)
        elif not (finished and keep_worker):
            stack.worker().stop()
        _report_what_runs(stack, settings, report, worker_running=finished and keep_worker and not down)


def _report_what_runs(stack: LocalStack, settings: Settings, report: Report, worker_running: bool) -> None:
    """What still runs after the demo, and the commands that start or stop the rest."""
    omniseg = ".venv/bin/omniseg"
    lines = ["\n== what runs now"]
    servers = [(proc.name, proc.pid()) for proc in (stack.kafka(), stack.clickhouse())]
    for name, pid in servers:
        lines.append(f"  {name}: {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    worker_pid = stack.worker().pid() if worker_running else None
    if worker_pid:
        lines.append(
            f"  worker: running (pid {worker_pid}, log {stack.worker().log_file}): events you send or "
            f"import (`{omniseg} import …`) reach ClickHouse and the segments"
        )
    else:
        lines.append(f"  worker: stopped; start it with: {omniseg} dev up --worker")
    lines.append(f"  collector: stopped; start it with: {omniseg} collector serve")
    if all(pid for _, pid in servers):
        lines.append(
            f"Query: clickhouse-client --port {settings.clickhouse_port} -d {settings.clickhouse_database}"
        )
        lines.append(f"Stop everything with: {omniseg} dev down")
    else:
        lines.append(
            f"Start the stack and a worker again with: {omniseg} dev up --worker "
            "(ClickHouse keeps its data; the local broker starts empty)"
        )
    report("\n".join(lines))


SEGMENTS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "segments"


def _catalog_and_segments(settings: Settings, report: Report) -> None:
    """The product catalog and the example segment definitions, published before events flow."""
    from streams.sources.catalog_import import EXAMPLE_CATALOG, import_catalog
    from streams.stages.segments.definitions import apply_definitions

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
        report(_personalised_share(kpi.run(client, "personalised_traffic_share")))
        changes = kpi.run(client, "identity_changes_by_day")
        report(f"\nKPI: identity changes per day of the shopper's event\n{changes.render()}")
        sample = client.execute(
            "SELECT person_id, segment_id, subject, change, seq, trigger, reason, email FROM segment_changes "
            "WHERE email != '' ORDER BY at DESC LIMIT 3"
        )
        columns = ["person", "segment", "subject", "change", "seq", "trigger", "reason", "email"]
        table = kpi.Table(columns, sample)
        report(f"\nWhat an email tool receives on segments.changes (latest)\n{table.render()}")
    finally:
        client.disconnect()


def _personalised_share(full: kpi.Table) -> str:
    """The share KPI for the days on which personalised segments were live; the days before are
    summed in one line (their traffic happened before any segment could have personalised it)."""
    live_at = full.columns.index("live_events")
    live = kpi.Table(full.columns, [row for row in full.rows if row[live_at]])
    before = [row for row in full.rows if not row[live_at]]
    text = (
        "\nKPI: share of traffic in personalised segments, while segments were live "
        f"(personalised_traffic_share)\n{live.render()}"
    )
    if before:
        days = sorted({str(row[0]) for row in before})
        events = sum(int(row[full.columns.index("events")]) for row in before)
        text += (
            f"\n{len(days)} earlier day(s) ({days[0]} to {days[-1]}, {events:,} events): before segments "
            "were live, so no share (the history is evaluated when it arrives, after it happened)"
        )
    return text


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


def _keys(settings: Settings) -> dict[Channel, str]:
    return {source.channel: key for key, source in settings.sources.items()}


def _call_time(call: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(call["timestamp"])


def _send_history(
    conn: http.client.HTTPConnection,
    settings: Settings,
    calls: Iterator[tuple[Channel, dict[str, Any]]],
    today: datetime,
    result: DemoResult,
    report: Report,
) -> list[tuple[Channel, dict[str, Any]]]:
    """Post every call from before ``today`` as it is; returns today's calls (the stream's tail).

    Every channel's batch is posted whenever ``_BATCH`` calls wait in all, so the history arrives in
    about its time order across channels, as it would from sources sending as it happens (identity
    decisions, such as which login merges whom, depend on that order).
    """
    keys = _keys(settings)
    pending: dict[Channel, list[dict[str, Any]]] = {channel: [] for channel in keys}
    live: list[tuple[Channel, dict[str, Any]]] = []

    def flush() -> None:
        for channel, batch in pending.items():
            if batch:
                _post(conn, keys[channel], batch, result)
                bar.update(len(batch))
                pending[channel] = []

    with tqdm(desc="history sent", unit="ev", file=sys.stderr) as bar:
        waiting = 0
        for channel, call in calls:
            if live or _call_time(call) >= today:
                live.append((channel, call))
                continue
            pending[channel].append(call)
            result.sent[channel] += 1
            waiting += 1
            if waiting >= _BATCH:
                flush()
                waiting = 0
        flush()
    report(f"history: {sum(result.sent.values()):,} events accepted up to yesterday")
    return live


def retime(
    calls: list[tuple[Channel, dict[str, Any]]], begin: datetime, seconds: float
) -> list[tuple[float, Channel, dict[str, Any]]]:
    """Today's calls spread over ``seconds`` from ``begin`` in their order and proportions:
    ``(offset in seconds, channel, call)`` with the call's timestamp ``begin + offset``. MessageIds stay."""
    if not calls:
        return []
    times = [_call_time(call) for _, call in calls]
    span = max((times[-1] - times[0]).total_seconds(), 1.0)
    out = []
    for (channel, call), at in zip(calls, times, strict=True):
        offset = (at - times[0]).total_seconds() * seconds / span
        stamp = (begin + timedelta(seconds=offset)).isoformat(timespec="milliseconds")
        out.append((offset, channel, {**call, "timestamp": stamp}))
    return out


def _send_live(
    conn: http.client.HTTPConnection,
    settings: Settings,
    calls: list[tuple[Channel, dict[str, Any]]],
    seconds: float,
    result: DemoResult,
) -> None:
    """Post today's calls as they happen: each one when its (re-timed) event time comes."""
    keys = _keys(settings)
    started = time.monotonic()
    timed = retime(calls, datetime.now(UTC), seconds)
    with tqdm(total=len(timed), desc="live sent", unit="ev", file=sys.stderr) as bar:
        index = 0
        while index < len(timed):
            elapsed = time.monotonic() - started
            due: dict[Channel, list[dict[str, Any]]] = {}
            while index < len(timed) and timed[index][0] <= elapsed:
                _, channel, call = timed[index]
                due.setdefault(channel, []).append(call)
                result.sent[channel] += 1
                index += 1
            for channel, batch in due.items():
                for chunk in range(0, len(batch), _BATCH):
                    _post(conn, keys[channel], batch[chunk : chunk + _BATCH], result)
                bar.update(len(batch))
            if index < len(timed):
                time.sleep(min(0.25, max(0.0, timed[index][0] - (time.monotonic() - started))))
    result.live_events = len(timed)


def _broken_calls(stream: str) -> list[dict[str, Any]]:
    base = {"timestamp": datetime.now(UTC).isoformat()}
    return [
        {**base, "type": "track", "event": "Product Viewed", "messageId": f"{stream}-bad-1"},
        {
            **base,
            "type": "track",
            "anonymousId": "a-1",
            "properties": "oops",
            "messageId": f"{stream}-bad-2",
        },
        {**base, "type": "purchase", "anonymousId": "a-1", "messageId": f"{stream}-bad-3"},
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
        if response.status == 429:
            # Over the write key's rate limit (OMNISEG_COLLECTOR_RATE_LIMIT_PER_S): wait as told.
            time.sleep(float(response.getheader("Retry-After") or 1))
            continue
        if response.status < 500:
            raise StackError(f"collector refused a batch ({response.status}): {payload}")
        time.sleep(0.5 * (attempt + 1))
    raise StackError("collector kept failing (5xx); see demo-collector.log in the state folder")


def _wait_until_landed(settings: Settings, result: DemoResult, timeout_s: float, worker_log: Path) -> None:
    """Until ClickHouse holds every accepted event of this stream (its messageIds share a prefix), in the
    history and, with identity resolution on, resolved (event_persons, which the KPIs read), and the
    calls the collector rejected (invalid_events, which the results print)."""
    client = clickhouse_client(settings, settings.clickhouse_database)
    query = "SELECT count() FROM events_dedup WHERE message_id LIKE %(prefix)s"
    if settings.identity_enabled:
        query = (
            "SELECT least((SELECT count() FROM events_dedup WHERE message_id LIKE %(prefix)s), "
            "(SELECT uniqExact(message_id) FROM event_persons WHERE message_id LIKE %(prefix)s))"
        )
    started = time.monotonic()
    with tqdm(total=result.accepted, desc="landed in ClickHouse", unit="ev", file=sys.stderr) as bar:
        while True:
            landed = int(client.execute(query, {"prefix": f"{result.stream_id}-%"})[0][0])
            bar.update(min(landed, result.accepted) - bar.n)
            refused = int(
                client.execute(
                    "SELECT count() FROM invalid_events WHERE stage = 'collector' AND position != '' "
                    "AND received_at >= toDateTime(%(since)s)",
                    {"since": int(result.started_at) - 1},
                )[0][0]
            )
            if landed >= result.accepted and refused >= result.rejected:
                break
            if time.monotonic() - started > timeout_s:
                raise StackError(
                    f"only {landed:,} of {result.accepted:,} events reached ClickHouse "
                    f"within {timeout_s:.0f} s; see {worker_log}"
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
