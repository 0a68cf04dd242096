"""``/v1/usecases`` on the read API against ClickHouse 18.16: the registrations, a report as JSON (nan
as null) and as the HTML page, 401 without a token, 404 for a use case never started."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from streams.api.destinations import DestinationRegistry
from streams.api.persons import create_persons_app
from streams.dev.stack import clickhouse_client
from streams.domain.experiments.assignment import arm
from streams.domain.experiments.usecases import load_usecases
from streams.settings import Settings
from streams.warehouse import usecases

pytestmark = pytest.mark.integration

TOKEN = "usecase-api-token"
DEFINITION = {
    "id": "shoes-reminder",
    "hypothesis": "A browse reminder raises the share of shoe browsers who buy.",
    "audience": "browsed-shoes-not-bought",
    "channels": ["email"],
    "primary_kpi": "conversion_rate",
    "guardrail_kpis": ["return_rate"],
    "control_share": 0.3,
    "minimum_detectable_effect": 0.1,
}


def test_the_report_over_the_api(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings = settings_factory(api_tokens=TOKEN)
    db = clickhouse_client(settings, settings.clickhouse_database)
    try:

        def rows(sql: str) -> list[tuple[object, ...]]:
            return [tuple(row) for row in db.execute(sql)]

        (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
        start = datetime(2026, 11, 1, tzinfo=UTC)
        usecases.start(rows, rows, usecase, now=start)
        at = int(start.timestamp() * 1000) + 1000
        persons = [f"p{n}" for n in range(60)]
        db.execute(
            "INSERT INTO usecase_exposures (usecase_id, version, person_id, arm, at_ms, change_id) VALUES",
            [("shoes-reminder", 1, p, arm("shoes-reminder", p, 0.3).value, at, f"c{p}") for p in persons],
        )
        db.execute(
            "INSERT INTO event_persons (message_id, channel, type, event, person_id, revenue, timestamp_ms) "
            "VALUES",
            [(f"m{p}", "web", "track", "Order Completed", p, 30.0, at + 5000) for p in persons[::3]],
        )
        app = create_persons_app(settings, destinations=DestinationRegistry(tmp_path, check_every_s=0))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with TestClient(app) as http:
            assert http.get("/v1/usecases").status_code == 401
            listing = http.get("/v1/usecases", headers=auth).json()
            assert [(u["usecase_id"], u["version"], u["running"]) for u in listing] == [
                ("shoes-reminder", 1, True)
            ]
            assert listing[0]["registration"]["control_share"] == 0.3

            report = http.get("/v1/usecases/shoes-reminder/report", headers=auth).json()
            assert report["primary_kpi"] == "conversion_rate"
            control, treatment = report["arms"]
            assert control["persons"] + treatment["persons"] == 60
            assert control["conversions"] + treatment["conversions"] == 20
            roles = {e["kpi"]: e["role"] for e in report["estimates"]}
            assert roles["conversion_rate"] == "primary" and roles["return_rate"] == "guardrail"
            assert roles["aov"] == "exploratory"
            # Every order is 30.0: AOV has no variance in either arm, so its test is undefined (null).
            aov = next(e for e in report["estimates"] if e["kpi"] == "aov")
            assert aov["control"] == 30.0 and aov["p_value"] is None

            page = http.get("/v1/usecases/shoes-reminder/report.html", headers=auth)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "shoes-reminder" in page.text

            missing = http.get("/v1/usecases/nobody/report", headers=auth)
            assert missing.status_code == 404 and "never started" in missing.json()["detail"]
            assert http.get("/v1/usecases/shoes-reminder/report?version=9", headers=auth).status_code == 404
    finally:
        db.disconnect()
