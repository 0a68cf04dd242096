"""segments.forward backfill parts: what is encoded decodes equal, and a broken part is a clear error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.segments.backfill import BackfillBatch
from streams.wire.codecs import SEGMENT_FORWARD_CODEC, SerializationError
from streams.wire.segments import decode_backfill, decode_forward, encode_backfill, encode_backfill_end

entries = st.tuples(
    st.integers(0, 2**42), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1)
)


@given(
    features=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True),
    data=st.data(),
    part=st.integers(0, 1000),
    last=st.booleans(),
)
def test_a_backfill_part_decodes_equal(
    features: list[str], data: st.DataObject, part: int, last: bool
) -> None:
    found = {
        fid: tuple(data.draw(st.lists(entries, min_size=1, max_size=5)))
        for fid in data.draw(st.lists(st.sampled_from(features), unique=True))
    }
    batch = BackfillBatch("run-1", "person-1", part, last, tuple(features), found)
    raw = encode_backfill(batch, 1_700_000_000_000)
    assert decode_backfill(raw) == batch
    assert decode_forward(raw)[:2] == ("backfill", "person-1")


def test_a_part_delivered_to_a_survivor_keeps_the_person_it_was_for() -> None:
    batch = BackfillBatch("run-1", "merged", 0, True, ("fa",), {"fa": ((1, 1.0, 7),)})
    raw = encode_backfill(batch, 5, deliver_to="survivor")
    assert decode_forward(raw)[:3] == ("backfill", "survivor", "merged")
    assert decode_backfill(raw) == batch


def test_the_end_of_a_run_names_its_features() -> None:
    raw = encode_backfill_end("run-1", ["fa", "fb"], 5)
    assert decode_forward(raw)[:2] == ("backfill_end", "")
    assert decode_backfill(raw).features == ("fa", "fb")


def test_a_part_with_uneven_entries_is_a_serialization_error() -> None:
    raw = SEGMENT_FORWARD_CODEC.encode(
        {
            "kind": "backfill",
            "personId": "p",
            "at": 1,
            "backfill": {
                "runId": "r",
                "part": 0,
                "last": True,
                "features": ["fa"],
                "feature": [0, 0],
                "timestamps": [1],
                "values": [1.0],
                "messageHashes": [1],
            },
        }
    )
    with pytest.raises(SerializationError, match="entry arrays of different lengths"):
        decode_backfill(raw)
    raw = SEGMENT_FORWARD_CODEC.encode({"kind": "backfill", "personId": "p", "at": 1})
    with pytest.raises(SerializationError, match="without its backfill part"):
        decode_backfill(raw)
