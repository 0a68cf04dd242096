"""A migration that ran somewhere is never edited: the runner refuses to start when an applied
migration's checksum changed, so even a comment edit would stop every existing deployment."""

from __future__ import annotations

from streams.warehouse.migrations import discover

# Add a line here with each new migration; never change one.
APPLIED = {
    "0001_events.sql": "aa641486f36ab34a",
    "0002_events_dedup_view.sql": "c5fb3c215d58a9df",
    "0003_identity_tables.sql": "2d303e9b8e8914f5",
    "0004_identity_views.sql": "ac31bc7e18aecb21",
    "0005_products.sql": "28bf5b26cc7138e6",
    "0006_segments.sql": "8daaa2ec6c2f670a",
    "0007_dedup_by_message_id.sql": "609275ac1c043c6c",
    "0008_original_timestamp.sql": "200e169ff18c57cf",
    "0009_audiences.sql": "1e9440f8e1075f5d",
    "0010_consent.sql": "d6273d8349b6852f",
    "0011_usecases.sql": "6b204134724496c8",
    "0012_privacy_requests.sql": "2aea3c31d7332fb6",
    "0013_person_days.sql": "f0140840151d763a",
    "0014_segment_backfills.sql": "4e8c21639c8d4fc9",
    "0015_audience_frontier.sql": "ff75ec31339cb27a",
}


def test_published_migrations_keep_their_checksums() -> None:
    found = {m.path.name: m.checksum for m in discover()}
    changed = {name: found.get(name) for name, checksum in APPLIED.items() if found.get(name) != checksum}
    assert not changed, f"published migrations edited or removed (add a new migration instead): {changed}"


def test_every_migration_is_pinned() -> None:
    assert sorted(m.path.name for m in discover()) == sorted(APPLIED), "pin the new migration's checksum"
