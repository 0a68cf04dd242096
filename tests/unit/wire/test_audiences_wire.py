"""audiences.inputs and audiences.deltas records round-trip to the same domain values, and a damaged
configuration is one clear SerializationError, never a half-read configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.destinations import load_destination_dir
from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import (
    AudienceInput,
    Configuration,
    MembershipChange,
    PersonRemoved,
    PersonUpdate,
)
from streams.domain.consent import ConsentPolicy, Decision
from streams.domain.experiments.assignment import RunningUseCase
from streams.wire.audiences import (
    configuration_from_json,
    configuration_json,
    decode_delta,
    decode_input,
    encode_delta,
    encode_input,
    encode_membership,
)
from streams.wire.codecs import AUDIENCE_INPUT_CODEC, SerializationError

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "destinations"
AT = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
POLICY = ConsentPolicy(
    purposes=("advertising", "email", "ad_user_data", "ad_personalization"),
    defaults={"email": True},
    aliases={"marketing": "email"},
)


def _configuration() -> Configuration:
    return Configuration(tuple(load_destination_dir(DEPLOY, purposes=POLICY.purposes)), POLICY)


@pytest.mark.parametrize(
    "item",
    [
        MembershipChange("p1", "already-purchased", "product:blouse-1", 3),
        MembershipChange("p1", "high-value", None, 2),
        PersonUpdate(
            "p2",
            {
                AudienceIdKind.EMAIL: ("ann@shop.example", "ann.b@gmail.com"),
                AudienceIdKind.PHONE: ("+16505551212",),
            },
            {"advertising": Decision(False, 1_700_000_000_000), "email": Decision(True, 5)},
        ),
        PersonUpdate("p3", {}, {}),
        PersonRemoved("p4"),
    ],
    ids=lambda item: type(item).__name__,
)
def test_every_input_round_trips(item: AudienceInput) -> None:
    assert decode_input(encode_input(item, AT)) == item


def test_a_configuration_round_trips_with_its_destinations_and_policy() -> None:
    configuration = _configuration()
    assert configuration.destinations
    decoded = decode_input(encode_input(configuration, AT))
    assert decoded == configuration


USECASES = (
    RunningUseCase("winback-email", 3, "lapsed-customers", None, 0.1),
    RunningUseCase("blouse-suppression", 1, "already-purchased", "product:blouse-1", 0.25),
)


def test_a_configuration_round_trips_with_its_running_use_cases() -> None:
    configuration = Configuration(_configuration().destinations, POLICY, USECASES)
    decoded = decode_input(encode_input(configuration, AT))
    assert decoded == configuration
    assert isinstance(decoded, Configuration) and decoded.usecases == USECASES
    assert orjson.loads(configuration_json(configuration))["usecases"][1] == {
        "usecaseId": "blouse-suppression",
        "version": 1,
        "segmentId": "already-purchased",
        "subject": "product:blouse-1",
        "controlShare": 0.25,
    }


def test_a_configuration_published_before_use_cases_has_none_running() -> None:
    data = orjson.loads(configuration_json(Configuration(_configuration().destinations, POLICY, USECASES)))
    del data["usecases"]
    decoded = configuration_from_json(orjson.dumps(data).decode())
    assert decoded == _configuration()
    assert decoded.usecases == ()


@pytest.mark.parametrize(
    "change",
    [
        {"controlShare": 1.5},
        {"controlShare": "0.1"},
        {"version": 0},
        {"usecaseId": ""},
        {"subject": 7},
        {"segmentId": None},
        {},  # no segmentId at all
    ],
    ids=str,
)
def test_a_damaged_use_case_is_one_clear_error(change: dict[str, object]) -> None:
    data = orjson.loads(configuration_json(Configuration(_configuration().destinations, POLICY, USECASES)))
    if change:
        data["usecases"][0] |= change
    else:
        del data["usecases"][0]["segmentId"]
    with pytest.raises(SerializationError, match="malformed") as caught:
        configuration_from_json(orjson.dumps(data).decode())
    assert "\n" not in str(caught.value)


def test_a_configuration_that_no_longer_validates_is_one_clear_error() -> None:
    text = configuration_json(_configuration()).replace('"ad_user_data"', '"unknown_purpose"', 1)
    with pytest.raises(SerializationError, match=r"does not validate: .*unknown_purpose") as caught:
        configuration_from_json(text)
    assert "\n" not in str(caught.value)
    with pytest.raises(SerializationError, match="malformed"):
        configuration_from_json("{}")


def test_a_membership_without_a_segment_is_refused() -> None:
    data = AUDIENCE_INPUT_CODEC.encode({"kind": "membership", "personId": "p1", "seq": 1, "at": AT})
    with pytest.raises(SerializationError, match="without a segmentId"):
        decode_input(data)


def test_a_delta_round_trips() -> None:
    delta = Delta("google-ads", "already-purchased/product:blouse-1", AudienceIdKind.EMAIL, "ab" * 32, True)
    assert decode_delta(encode_delta(delta, AT)) == (delta, AT)


@given(
    person=st.text(max_size=40),
    segment=st.text(min_size=1, max_size=40),
    subject=st.none() | st.text(max_size=40),
    seq=st.integers(1, 2**40),
    at_ms=st.integers(0, 2**45),
)
def test_membership_bytes_equal_the_codecs(
    person: str, segment: str, subject: str | None, seq: int, at_ms: int
) -> None:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at_ms)  # exact: no float seconds
    expected = encode_input(MembershipChange(person, segment, subject, seq), at)
    assert encode_membership(person, segment, subject, seq, at_ms) == expected
