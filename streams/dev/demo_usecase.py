"""The demo's use-case act: a personalisation measured like an experiment, end to end.

The example use case ``shoes-reminder`` (deploy/usecases) is started, which pre-registers it and tells
the pipeline: shoppers entering ``browsed-shoes-not-bought`` from now on are assigned to control or
treatment from (use case, person), their segment changes carry the arm, and control shoppers are left
out of the ad platforms' audiences. The demo then plays the shop: new shoppers view shoes (entering the
audience, exposures recorded), and the treated ones, who got the reminder, buy more often: a known,
injected uplift. The report shows whether omniseg finds it: the lift with its interval and p-value, the
sample-ratio check, and the HTML page with the charts.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.dev.stack import clickhouse_client
from streams.domain.experiments.usecases import UseCase, load_usecases
from streams.domain.segments.loader import load_definitions
from streams.domain.yaml_documents import read_dir
from streams.settings import Settings

Report = Callable[[str], None]
Post = Callable[[list[dict[str, Any]]], None]

USECASE_ID = "shoes-reminder"
# The injected effect: the share of shoppers who buy after viewing shoes, without and with the reminder.
CONVERSION = {"control": 0.20, "treatment": 0.30}
SHOE = {"product_id": "P0001", "sku": "SKU-SHO-00001", "name": "Stride Loafer", "price": 57.04}
_WAIT_S = 120.0


def demo_usecase(settings: Settings) -> UseCase:
    segments = {d.id: d.kind for d in load_definitions(read_dir(settings.segments_dir, what="segment"))}
    usecases = load_usecases(read_dir(settings.usecases_dir, what="use case"), segments=segments)
    return next(u for u in usecases if u.id == USECASE_ID)


def run_usecase_act(settings: Settings, post: Post, report: Report, shoppers: int, seed: int) -> Path:
    """Start the use case, play ``shoppers`` new shoppers through it, print the report; the HTML path."""
    from streams.reports.usecase_text import render_text
    from streams.warehouse import usecase_outcomes
    from streams.warehouse import usecases as registry

    usecase = demo_usecase(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in client.execute(sql)]

    try:
        registration = _start(settings, usecase, rows, report)
        run = secrets.token_hex(3)
        users = [f"demo-uc-{run}-{n}" for n in range(shoppers)]
        first = _enter_audience(post, rows, registration.version, users)
        rest = users[first + 1 :]
        post_in_batches(
            post, [_call(user, "track", event="Product Viewed", properties=_product()) for user in rest]
        )
        arms = _wait_for_exposures(rows, registration.version, run, len(rest) + 1)
        counts = {arm: sum(1 for a in arms.values() if a == arm) for arm in ("control", "treatment")}
        report(
            f"{len(arms):,} shoppers viewed shoes and entered the audience: {counts['control']:,} control "
            f"(no reminder, left out of the ad audiences), {counts['treatment']:,} treatment"
        )
        rng = random.Random(seed)
        buyers = [user for user, arm in sorted(arms.items()) if rng.random() < CONVERSION[arm]]
        report(
            f"injected effect: {CONVERSION['control']:.0%} of control and {CONVERSION['treatment']:.0%} of "
            f"treatment shoppers buy within the window ({len(buyers):,} orders)"
        )
        line = {"sku": SHOE["sku"], "quantity": 1, "unitPrice": SHOE["price"]}
        post_in_batches(
            post,
            [
                _call(
                    user,
                    "track",
                    event="Order Completed",
                    properties={"revenue": SHOE["price"]},
                    lines=[line],
                )
                for user in buyers
            ],
        )
        _wait_for_orders(rows, run, len(buyers))
        found = usecase_outcomes.report(
            rows, registry.latest(rows, USECASE_ID) or registration, datetime.now(UTC)
        )
    finally:
        client.disconnect()
    report(render_text(found))
    from streams.reports.usecase_html import render_html

    path = settings.reports_dir.resolve() / f"{USECASE_ID}-v{found.version}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(found), encoding="utf-8")
    return path


def _start(
    settings: Settings, usecase: UseCase, rows: Callable[[str], list[tuple[Any, ...]]], report: Report
) -> Any:
    """A new version of the use case for this run (a running one is stopped first), published to the
    pipeline."""
    from streams.stages.audiences.configuration import publish_usecases
    from streams.warehouse import usecases as registry

    current = registry.latest(rows, usecase.id)
    if current is not None and current.running:
        registry.stop(rows, rows, usecase.id)
    outcome = registry.start(rows, rows, usecase)
    publish_usecases(settings, registry.running(rows))
    reg = outcome.registration
    report(
        f"started {usecase.id} v{reg.version} (pre-registered, checksum {reg.checksum[:12]}): "
        f"primary {usecase.primary_kpi}, guardrails {', '.join(usecase.guardrail_kpis)}, "
        f"{usecase.control_share:.0%} control, {usecase.attribution_window_days}-day window"
    )
    report(f"hypothesis: {usecase.hypothesis}")
    return reg


def _enter_audience(
    post: Post, rows: Callable[[str], list[tuple[Any, ...]]], version: int, users: list[str]
) -> int:
    """Send shoppers one at a time until one is exposed: the segment stage has applied the use case
    (one who entered before that is a shopper outside the experiment). The index of that one."""
    deadline = time.monotonic() + _WAIT_S
    for index, user in enumerate(users):
        post([_call(user, "track", event="Product Viewed", properties=_product())])
        until = min(time.monotonic() + 10, deadline)
        while time.monotonic() < until:
            if _exposed(rows, version, user):
                return index
            time.sleep(0.5)
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(f"no exposure of {USECASE_ID} within {_WAIT_S:.0f}s; see the worker log")


def _exposed(rows: Callable[[str], list[tuple[Any, ...]]], version: int, user: str) -> bool:
    ((count,),) = rows(
        "SELECT count() FROM usecase_exposures WHERE usecase_id = 'shoes-reminder' "
        f"AND version = {int(version)} AND person_id IN "
        f"(SELECT person_id FROM event_persons WHERE user_id = '{user}')"
    )
    return int(count) > 0


def _wait_for_exposures(
    rows: Callable[[str], list[tuple[Any, ...]]], version: int, run: str, count: int
) -> dict[str, str]:
    """user id -> arm of this run's shoppers, once every one is exposed."""
    deadline = time.monotonic() + _WAIT_S
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = {
            str(user): str(arm)
            for user, arm in rows(
                "SELECT users.user_id, toString(exposures.arm) FROM "
                f"(SELECT person_id, arm FROM usecase_exposures WHERE usecase_id = 'shoes-reminder' "
                f"AND version = {int(version)}) AS exposures "
                "ALL INNER JOIN (SELECT DISTINCT person_id, user_id FROM event_persons "
                f"WHERE user_id LIKE 'demo-uc-{run}-%') AS users "
                "USING person_id"
            )
        }
        if len(found) >= count:
            return found
        time.sleep(1)
    raise RuntimeError(f"{len(found)} of {count} shoppers exposed within {_WAIT_S:.0f}s; see the worker log")


def _wait_for_orders(rows: Callable[[str], list[tuple[Any, ...]]], run: str, count: int) -> None:
    deadline = time.monotonic() + _WAIT_S
    landed = 0
    while time.monotonic() < deadline:
        ((landed,),) = rows(
            "SELECT count() FROM event_persons FINAL WHERE event = 'Order Completed' "
            f"AND user_id LIKE 'demo-uc-{run}-%'"
        )
        if int(landed) >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"{landed} of {count} orders landed within {_WAIT_S:.0f}s; see the worker log")


def post_in_batches(post: Post, calls: list[dict[str, Any]], size: int = 200) -> None:
    for start in range(0, len(calls), size):
        post(calls[start : start + size])


def _product() -> dict[str, Any]:
    return {**SHOE, "category": "shoes", "brand": "Stride", "currency": "GBP"}


def _call(user: str, kind: str, **fields: Any) -> dict[str, Any]:
    granted = {"Advertising": True, "ad_user_data": True, "ad_personalization": True}
    return {
        "type": kind,
        "messageId": f"{user}-{secrets.token_hex(4)}",
        "userId": user,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "context": {"consent": {"categoryPreferences": granted}, "page": {"path": "/shoes"}},
        **fields,
    }
