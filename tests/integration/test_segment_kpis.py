"""The segment KPIs give known answers on ClickHouse 18.16 (chDB runs them in test_kpi_queries.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.warehouse import kpi

pytestmark = pytest.mark.integration


def test_segment_kpis_count_sizes_and_personalised_share(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    midnight = datetime.combine(date.today() - timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    base = int(midnight.timestamp())
    # p1 enters vip at base+100 and leaves at base+200; p2 enters vip at base+100 and stays;
    # p2 also bought product P (suppression, not personalised).
    changes = [
        ("c1", "p1", "vip", "", "entered", 1, base + 100),
        ("c2", "p1", "vip", "", "exited", 2, base + 200),
        ("c3", "p2", "vip", "", "entered", 1, base + 100),
        ("c4", "p2", "bought", "product:P", "entered", 1, base + 50),
    ]
    client.execute(
        "INSERT INTO segment_changes (change_id, person_id, segment_id, subject, change, seq, at) VALUES",
        [(*row[:6], datetime.fromtimestamp(row[6], UTC)) for row in changes],
    )
    client.execute(
        "INSERT INTO segment_definitions "
        "(segment_id, version, deleted, kind, personalised, applied_at) VALUES",
        [
            ("vip", 1, 0, "segment", 1, midnight),
            ("bought", 1, 0, "suppression", 0, midnight),
            ("old", 1, 0, "segment", 1, midnight),
            ("old", 2, 1, "segment", 1, midnight),
        ],
    )
    # web events: p1 inside its spell (in), p1 after it (out), p2 before entering (out), p2 after (in)
    events = [("e1", "p1", 150), ("e2", "p1", 250), ("e3", "p2", 60), ("e4", "p2", 300)]
    client.execute(
        "INSERT INTO events (message_id, type, channel, event, timestamp) VALUES",
        [
            (mid, "track", "web", "Product Viewed", datetime.fromtimestamp(base + s, UTC))
            for mid, _, s in events
        ],
    )
    client.execute(
        "INSERT INTO event_persons (message_id, channel, type, person_id, timestamp) VALUES",
        [(mid, "web", "track", person, datetime.fromtimestamp(base + s, UTC)) for mid, person, s in events],
    )
    try:
        count = kpi.run(client, "segments_count").rows[0]
        assert count == (2, 2, 2, 1)  # vip and bought live; p2 is in vip and in bought (product P)
        share = kpi.run(client, "personalised_traffic_share").rows
        assert [(row[1], row[2], row[3]) for row in share] == [("web", 4, 2)]
        sizes = {(row[0], row[1]): row[2] for row in kpi.run(client, "segment_sizes_by_day").rows}
        day = midnight.date()
        assert sizes[(day, "vip")] == 1  # p1 left the same day; p2 remains
        assert sizes[(day, "bought")] == 1
        assert sizes[(date.today(), "vip")] == 1
    finally:
        client.disconnect()
