"""The demo end to end: stack, worker and collector processes, stream in, ClickHouse out; what it leaves
running; and a re-run of the same seed adding nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clickhouse_driver import Client

from streams.dev.process import free_port
from streams.warehouse import kpi

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "streams.cli"]
DEMO = ["demo", "--customers", "40", "--days", "4", "--live-seconds", "8", "--usecase-shoppers", "1000"]


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _wait_for(condition, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_demo_lands_every_accepted_event_and_prints_kpis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clickhouse_port = free_port()
    # Only the state folder and the ports: every later command finds this stack through the env file
    # `dev up` wrote in that folder (no OMNISEG_ENV_FILE).
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMNISEG_")}
    env |= {
        "OMNISEG_DEV_STATE_DIR": str(state),
        "OMNISEG_DEV_KAFKA_PORT": str(free_port()),
        "OMNISEG_DEV_CLICKHOUSE_PORT": str(clickhouse_port),
        "OMNISEG_DEV_CLICKHOUSE_HTTP_PORT": str(free_port()),
        "OMNISEG_COLLECTOR_PORT": str(free_port()),
        "OMNISEG_API_PORT": str(free_port()),
        "OMNISEG_REPORTS_DIR": str(tmp_path / "reports"),
    }
    later = {name: value for name, value in env.items() if not name.startswith("OMNISEG_")}
    later["OMNISEG_DEV_STATE_DIR"] = str(state)
    client = Client("127.0.0.1", port=clickhouse_port, database="omniseg")
    try:
        result = _run(env, *DEMO, timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        accepted = re.search(r"accepted ([\d,]+), rejected 3", result.stdout)
        assert accepted, result.stdout
        landed = re.search(r"all ([\d,]+) events visible in ClickHouse", result.stdout)
        assert landed and landed.group(1) == accepted.group(1)
        for title in ("Events per channel", "funnel per channel", "revenue per channel", "Rejected records"):
            assert title in result.stdout
        rejected = result.stdout[result.stdout.find("Rejected records") :][:1500]
        assert "unknown call type 'purchase'" in rejected, rejected
        # The ad platform's view: Dana enters the target, moves to the suppression audience with her
        # purchase, and leaves it when she withdraws consent.
        tour = result.stdout[result.stdout.index("== 8. ad platforms") :]
        for line in (
            "next delta of browsed-shoes-not-bought: add",
            "next delta of browsed-shoes-not-bought: remove",
            "next delta of already-purchased/product:P0001: add",
            "next delta of already-purchased/product:P0001: remove",
        ):
            assert line in tour, tour

        # The use case: started (pre-registered), its shoppers exposed in both arms, the report printed
        # with the injected lift's test and the HTML page written.
        act = result.stdout[result.stdout.index("== 9. a use case") :]
        assert re.search(r"started shoes-reminder v\d+ \(pre-registered", act), act
        arms = re.search(r"([\d,]+) shoppers viewed shoes and entered the audience: ([\d,]+) control", act)
        assert arms and int(arms.group(2).replace(",", "")) > 0, act
        assert "Use-case report: shoes-reminder" in act and re.search(r"conversion_rate +primary", act), act
        assert "SRM OK" in act, act
        page = re.search(r"HTML report \(open it in a browser; it needs no network\): (\S+)", act)
        assert page and Path(page.group(1)).read_text().startswith("<!doctype html>"), act

        # The KPIs agree with the stream: the history days are labelled, today's live traffic falls in
        # membership spells, and identity changes fall on the days of the events that caused them.
        assert "earlier day(s)" in result.stdout and "before segments were live" in result.stdout
        share = kpi.run(client, "personalised_traffic_share")
        col = {name: i for i, name in enumerate(share.columns)}
        live = [row for row in share.rows if row[col["live_events"]]]
        before = [row for row in share.rows if not row[col["live_events"]]]
        assert live and sum(row[col["personalised_events"]] for row in live) > 0, share.render()
        assert max(row[col["personalised_share"]] for row in live) > 0, share.render()
        assert len({row[0] for row in before}) == 3, share.render()
        assert all(row[col["note"]] == "before segments were live" for row in before), share.render()
        assert all(row[col["personalised_share"]] is None for row in before), share.render()
        changes = kpi.run(client, "identity_changes_by_day")
        triggers = client.execute(
            "SELECT DISTINCT toDate(timestamp) FROM event_persons FINAL "
            "WHERE message_id IN (SELECT message_id FROM identity_merges "
            "UNION ALL SELECT message_id FROM identity_rejections)"
        )
        # Which events merge two persons depends on the order the channels' topics are read in, so
        # the days they fall on vary run to run; test_kpi_clocks.py proves the dating on fixed data.
        assert {row[0] for row in changes.rows} == {row[0] for row in triggers}, changes.render()

        # What runs after the demo: the servers and the worker; the collector is offered.
        assert "worker: running" in result.stdout
        assert "collector: stopped; start it with: .venv/bin/omniseg collector serve" in result.stdout
        status = _run(later, "dev", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert re.search(r"^worker\s+running", status.stdout, re.M), status.stdout
        stores = "SELECT count() FROM events_dedup WHERE channel = 'store'"
        before_import = client.execute(stores)[0][0]
        imported = _run(later, "import", "--channel", "store", str(ROOT / "deploy/examples/pos_export.csv"))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        _wait_for(lambda: client.execute(stores)[0][0] > before_import)

        # Same seed, same stream, same messageIds: a re-run adds nothing to the history (but the
        # ad-platform tour's shopper and the use case's shoppers, who are new in every run; the use
        # case starts a new version, a new analysis period).
        stream = (
            "SELECT count() FROM events_dedup "
            "WHERE message_id NOT LIKE 'demo-dana-%' AND message_id NOT LIKE 'demo-uc-%'"
        )
        total = client.execute(stream)[0][0]
        again = _run(env, *DEMO, timeout=400)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"accepted {accepted.group(1)}, rejected 3" in again.stdout
        assert re.search(r"started shoes-reminder v[2-9]", again.stdout), again.stdout[-3000:]
        assert client.execute(stream)[0][0] == total
    finally:
        client.disconnect()
        down = _run(later, "dev", "down")
    assert "worker: stopped" in down.stdout, down.stdout
    assert not list(state.glob("*.pid")), "every process the demo started must be stopped"
