"""The pure parts of streaming identity: fast extraction, the fast-path decision, ResolvedEvent bytes by
concatenation, the Kafka partitioner, and the link writer's replay-exact state (streams/domain/resolution.py,
streams/wire/identity.py)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.domain.events import Event
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import IdentityRules, PersonRecord, TypeRule
from streams.domain.resolution import FastExtractor, LinkState, fast_person, merge_change_id
from streams.kafka.partitioner import murmur2, murmur2_partition
from streams.wire.codecs import (
    EVENT_CODEC,
    IDENTITY_ASSIGNMENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    IDENTITY_PERSON_CODEC,
    RESOLVED_CODEC,
    SCHEMA_DIR,
    AvroCodec,
)
from streams.wire.identity import (
    EVENT_DECODER,
    avro_long,
    event_body,
    raw_ids,
    resolved_event,
)
from tests.unit.domain.test_identity_properties import rules_strategy

RULES_FILE = Path(__file__).resolve().parents[3] / "deploy" / "identity.yaml"

# Raw values: good ones in several spellings, junk, blanks, invalid values, and numbers for phones.
RAW = {
    "userId": ["c1", " c1 ", "C1", "null", "  ", "0", "undefined"],
    "anonymousId": ["a1", "A1", "8F3C1A2B-1111-4222-8333-444455556666", "anonymous", " ", "0000-0000"],
    "previousId": ["a1", "a2", "", "null"],
    "email": ["ann@shop.com", " Ann@Shop.COM", "test@test.com", "not-an-email", "noreply@x.com", ""],
    "phone": ["07911 123456", "+447911123456", "12", "0000", "+1 202-555-0143"],
    "loyaltyCard": ["1234 5678", "1234-5678", "NULL", "ab.12"],
    "crmId": ["CRM-1", "crm 1", "none"],
    "espSubscriberId": ["sub-1", "", "nan"],
    "device.id": ["ABCDEF0123", "iPad-of-mum", "", "null", "00000000-0000-0000-0000-000000000000"],
    "device.advertisingId": ["8F3C1A2B-1111-4222-8333-444455556666", "not-a-uuid", ""],
}


@st.composite
def avro_events(draw: st.DrawFn) -> bytes:
    """Event records as a direct producer may write them: raw values, blanks included."""
    chosen = draw(st.sets(st.sampled_from(sorted(RAW)), min_size=1))
    raw = {name: draw(st.sampled_from(RAW[name])) for name in chosen}
    device: dict[str, Any] | None = None
    if "device.id" in raw or "device.advertisingId" in raw or draw(st.booleans()):
        device = {
            "id": raw.get("device.id"),
            "advertisingId": raw.get("device.advertisingId"),
            "adTrackingEnabled": draw(st.sampled_from([None, True, False])),
        }
    record = Event.model_validate(
        {
            "messageId": f"m-{draw(st.integers(0, 10**6))}",
            "type": "identify",
            "anonymousId": "placeholder",
            "context": {"channel": draw(st.sampled_from(["web", "app", "email", "store"]))},
            "traits": {"plan": "gold"} if draw(st.booleans()) else None,
            "lines": [{"sku": "SKU-1", "quantity": 2.0, "unitPrice": 9.99, "currency": "GBP"}]
            if draw(st.booleans())
            else [],
            "timestamp": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
            "receivedAt": datetime(2026, 1, 2, 3, 4, 6, 1000, tzinfo=UTC),
        }
    ).to_avro()
    record["context"]["device"] = device
    for name in ("userId", "anonymousId", "previousId"):
        record[name] = raw.get(name)
    for name in ("email", "phone", "loyaltyCard", "crmId", "espSubscriberId"):
        record["identifiers"][name] = raw.get(name)
    if record["previousId"] is not None:
        record["type"] = "alias"
    return EVENT_CODEC.encode(record)


def _model_extract(rules: IdentityRules, data: bytes) -> Any:
    try:
        event = Event.from_avro(EVENT_CODEC.decode(data))
    except ValueError:
        return None  # the model refuses this record (e.g. an alias without userId)
    return rules.extract(event)


@settings(max_examples=500, deadline=None)
@given(avro_events(), rules_strategy())
def test_fast_extractor_equals_rules_extract(data: bytes, rules: IdentityRules) -> None:
    expected = _model_extract(rules, data)
    assume(expected is not None)
    values, tracking = raw_ids(EVENT_DECODER.decode(data))
    fast = FastExtractor(rules)
    assert fast.extract(values, tracking) == expected
    assert fast.extract(values, tracking) == expected  # and again from its memo


def test_fast_extractor_refuses_identifiers_the_event_model_would_refuse() -> None:
    fast = FastExtractor(IdentityRules())
    values = ("x" * 300, None, None, None, None, None, None, None, None, None)
    extracted = fast.extract(values, None)
    assert extracted.identifiers == ()
    assert extracted.rejected[0].reason == "invalid"
    assert "longer than 256" in extracted.rejected[0].detail


def test_fast_path_needs_every_identifier_known_and_one_person() -> None:
    owners = {"customer_id:c1": "p1", "email:a@b.co": "p1", "anonymous_id:x": "p2"}
    assert fast_person(["customer_id:c1", "email:a@b.co"], owners) == "p1"
    assert fast_person(["customer_id:c1", "anonymous_id:x"], owners) is None  # two persons: a link
    assert fast_person(["customer_id:c1", "anonymous_id:new"], owners) is None  # unknown: a link
    assert fast_person(["anonymous_id:new"], owners) is None
    assert fast_person([], owners) is None


@settings(max_examples=200, deadline=None)
@given(
    avro_events(),
    st.text(min_size=1, max_size=40),
    st.lists(st.text(max_size=30), max_size=4),
    st.integers(-(2**63), 2**63 - 1),
)
def test_resolved_event_concatenation_equals_fastavro(
    data: bytes, person: str, identifiers: list[str], resolved_at: int
) -> None:
    built = resolved_event(person, identifiers, resolved_at, event_body(data))
    expected = RESOLVED_CODEC.encode(
        {
            "personId": person,
            "identifiers": identifiers,
            "resolvedAt": resolved_at,
            "event": EVENT_CODEC.decode(data),
        }
    )
    assert built == expected


@given(st.integers(-(2**63), 2**63 - 1))
def test_avro_long_equals_fastavro(value: int) -> None:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", value)
    assert avro_long(value) == out.getvalue()


def test_event_written_with_an_older_schema_is_re_encoded(tmp_path: Path) -> None:
    current = json.loads((SCHEMA_DIR / "event.avsc").read_text())
    older = dict(current, fields=[f for f in current["fields"] if f["name"] != "lines"])
    (tmp_path / "history").mkdir()
    (tmp_path / "event.avsc").write_text(json.dumps(current))
    (tmp_path / "history" / "event.v0.avsc").write_text(json.dumps(older))
    codec = AvroCodec("event", schema_dir=tmp_path)
    old_writer = AvroCodec("event", schema_dir=tmp_path)
    old_schema = fastavro.parse_schema(older)
    record = Event.model_validate(
        {
            "messageId": "m1",
            "type": "identify",
            "userId": "c1",
            "context": {"channel": "web"},
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "receivedAt": datetime(2026, 1, 1, tzinfo=UTC),
        }
    ).to_avro()
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old_schema, record)
    fingerprint = next(fp for fp, schema in old_writer._writers.items() if schema.parsed == old_schema)
    data = b"\xc3\x01" + fingerprint + body.getvalue()
    rebuilt = event_body(data, codec)
    assert b"\xc3\x01" + codec.current.fingerprint + rebuilt == EVENT_CODEC.encode(codec.decode(data))


KAFKA_MURMUR2_VECTORS = {  # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", sorted(KAFKA_MURMUR2_VECTORS))
def test_murmur2_matches_kafka(key: bytes) -> None:
    assert murmur2(key) == KAFKA_MURMUR2_VECTORS[key]
    assert 0 <= murmur2_partition(key, 4) < 4


# -- the link writer's state --------------------------------------------------------------------------

POOL = [Identifier(kind, f"v{i}") for kind, size in ((IdKind.CUSTOMER_ID, 4), (IdKind.EMAIL, 5),
        (IdKind.DEVICE_ID, 3), (IdKind.ANONYMOUS_ID, 6)) for i in range(size)]  # fmt: skip
RULES = IdentityRules(
    identifier_types=(
        TypeRule(kind=IdKind.CUSTOMER_ID, limit=1),
        TypeRule(kind=IdKind.EMAIL, limit=2),
        TypeRule(kind=IdKind.DEVICE_ID, limit=2),
        TypeRule(kind=IdKind.ANONYMOUS_ID, limit=None),
    )
)
link_streams = st.lists(
    st.tuples(st.lists(st.sampled_from(POOL), min_size=1, max_size=4), st.integers(0, 5)),
    min_size=1,
    max_size=40,
)


def _publish(state: LinkState, stream: list[tuple[list[Identifier], int]], start: int) -> list[Any]:
    out: list[Any] = []
    for offset, (ids, at_ms) in enumerate(stream[start:], start):
        result = state.apply(ids, at_ms, f"m{offset}", "web", version=offset)
        out.append((offset, result))
    return out


def _fold(published: list[Any], upto: int) -> LinkState:
    """What a restarted writer reads back: the records of events before ``upto``, newest wins."""
    assignments: dict[str, tuple[str, int]] = {}
    persons: dict[str, PersonRecord] = {}
    for offset, result in published:
        if offset >= upto:
            break
        for record in result.assignments:
            assignments[record["identifier"]] = (record["personId"], record["firstSeen"])
        for record in result.persons:
            persons[record["personId"]] = PersonRecord(record["firstSeen"], record["mergedInto"])
    return LinkState.from_records(assignments, persons, RULES)


@settings(max_examples=300, deadline=None)
@given(link_streams, st.data())
def test_state_rebuilt_from_published_records_republishes_identical_records(
    stream: list[tuple[list[Identifier], int]], data: st.DataObject
) -> None:
    original = _publish(LinkState(_graph()), stream, 0)
    cut = data.draw(st.integers(0, len(stream)))
    resumed = _publish(_fold(original, cut), stream, cut)
    assert [(o, r) for o, r in original if o >= cut] == resumed


@settings(max_examples=300, deadline=None)
@given(link_streams)
def test_merged_person_ids_let_a_reader_fold_every_id_into_its_survivor(
    stream: list[tuple[list[Identifier], int]],
) -> None:
    state = LinkState(_graph())
    survivor_of: dict[str, str] = {}
    merges: list[str] = []
    for offset, result in _publish(state, stream, 0):
        for change in result.changes:
            IDENTITY_CHANGE_CODEC.encode(change)
            if change["kind"] == "merged":
                assert change["mergedPersonId"] in change["mergedPersonIds"]
                merges.append(change["changeId"])
                for pid in change["mergedPersonIds"]:
                    survivor_of[pid] = change["personId"]
        for record in result.assignments:
            IDENTITY_ASSIGNMENT_CODEC.encode(record)
            assert record["version"] == offset
        for record in result.persons:
            IDENTITY_PERSON_CODEC.encode(record)
    graph = state.graph
    for pid in graph.records()[1]:
        assert survivor_of.get(pid, pid) == graph.canonical(pid)
    assert len(merges) == len(set(merges))  # each merge once, with a deterministic id
    merged = {pid for pid, record in graph.records()[1].items() if record.merged_into}
    assert {merge_change_id(pid) for pid in merged} == set(merges)


def test_resolved_identifiers_leave_out_a_rejected_link() -> None:
    state = LinkState(_graph())
    mum = [Identifier(IdKind.CUSTOMER_ID, "mum"), Identifier(IdKind.DEVICE_ID, "ipad")]
    son = [Identifier(IdKind.CUSTOMER_ID, "son"), Identifier(IdKind.DEVICE_ID, "ipad")]
    first = state.apply(mum, 1, "m1", "app", version=0)
    second = state.apply(son, 2, "m2", "app", version=1)
    assert second.person_id != first.person_id
    assert second.identifiers == ["customer_id:son"]
    [rejection] = second.changes
    assert rejection["kind"] == "rejected"
    assert rejection["conflictingPersonId"] == first.person_id
    assert rejection["reason"] == "merge_limit:customer_id"
    assert state.apply(son, 2, "m2", "app", version=2).changes == [rejection]  # a replay: same change


def _graph() -> Any:
    from streams.domain.identity import IdentityGraph

    return IdentityGraph(RULES)


def test_default_rules_file_loads() -> None:
    assert IdentityRules.from_yaml(RULES_FILE) == IdentityRules()
