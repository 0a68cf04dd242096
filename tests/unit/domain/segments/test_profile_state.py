"""The segments.state form of a profile: every field is written, and it reads back equal."""

from __future__ import annotations

from array import array
from dataclasses import fields

import orjson
import pytest

from streams.domain.segments.profile import FORMAT, Profile, shared_context


def _full_profile() -> Profile:
    """A profile with a non-default value in every field."""
    return Profile(
        person_id="p-1",
        first_seen=1_000,
        last_ts=2_000,
        last_context=("web", "mobile", 20, 4, 11),
        traits={"tier": ["gold", 1_500]},
        contacts={"email": ["a@example.com", 1_500]},
        windowed={"f1": array("q", [1_000, 2_000])},
        wvalues={"f2": array("d", [12.5])},
        totals={"f3": [2, 30.0, 10.0, 20.0, 1_000, 2_000]},
        ledger={"sku-1": [1.0, 2.0]},
        category_ledger={"shoes": [1.0, 2.0]},
        purchases=[1_000, 2_000],
        purchase_count=2,
        revenue=30.0,
        channel_counts={"web": 2},
        hour_counts={"20": 2},
        category_counts={"shoes": 2},
        brand_counts={"acme": 2},
        members={"vip": 1, "lapsed": 2},
        versions={"vip": 3, "lapsed": 1},
        seen=array("q", [7, -9]),
        due=9_000,
        offsets={"r": 41},
        backfilled={"f1": ["run-1", -1]},
        backfill_live={"f1": array("q", [5, -6])},
    )


def test_every_field_is_written_and_nothing_else() -> None:
    written = orjson.loads(_full_profile().to_json())
    assert written.pop("format") == FORMAT
    assert list(written) == [f.name for f in fields(Profile)]


def test_a_profile_reads_back_equal() -> None:
    original = _full_profile()
    restored = Profile.from_json(original.to_json())
    assert restored == original
    assert restored.to_json() == original.to_json()


def test_a_state_of_another_format_is_refused() -> None:
    data = orjson.loads(_full_profile().to_json())
    data["format"] = FORMAT + 1
    with pytest.raises(ValueError, match=f"format {FORMAT + 1} is not one this version reads"):
        Profile.from_json(orjson.dumps(data))


def test_a_format_1_state_reads_as_the_same_profile() -> None:
    """States written before format 2 (memberships as key -> [count, time, version]) still restore."""
    data = orjson.loads(_full_profile().to_json())
    data["format"] = 1
    versions = data.pop("versions")
    data["members"] = {key: [seq, 1_900, versions[key]] for key, seq in data["members"].items()}
    restored = Profile.from_json(orjson.dumps(data))
    assert restored == _full_profile()
    assert restored.is_member("vip") and not restored.is_member("lapsed")
    del data["format"]  # the earliest states had no format key: format 1
    assert Profile.from_json(orjson.dumps(data)) == _full_profile()


def test_restored_profiles_share_one_context_tuple() -> None:
    state = _full_profile().to_json()
    first, second = Profile.from_json(state), Profile.from_json(state)
    assert first.last_context == ("web", "mobile", 20, 4, 11)
    assert first.last_context is second.last_context
    assert shared_context(("web", "mobile", 20, 4, 11)) is first.last_context
