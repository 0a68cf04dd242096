"""On a ClickHouse cluster, an erasure is refused before anything is published, and raw-event retention
cannot be configured: both alter tables that a cluster's Distributed tables refuse (one clear line)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.privacy.erasure import Erasure, ErasureUnsupported, Subject
from streams.settings import Settings


def test_an_erasure_on_a_cluster_is_refused_before_it_touches_anything() -> None:
    settings = Settings(clickhouse_cluster="omniseg")
    job = Erasure(settings, client=None, subject=Subject("person-1", ("person-1",)))
    with pytest.raises(ErasureUnsupported, match="does not run on a ClickHouse cluster yet"):
        job.open()  # the client (None) is never used: nothing is logged, published or deleted


def test_raw_event_retention_on_a_cluster_is_refused_with_one_line() -> None:
    with pytest.raises(ValidationError, match="OMNISEG_EVENTS_RETENTION_DAYS=0"):
        Settings(clickhouse_cluster="omniseg", events_retention_days=30)
    assert Settings(clickhouse_cluster="omniseg").events_retention_days == 0
    assert Settings(events_retention_days=30).clickhouse_cluster == ""
