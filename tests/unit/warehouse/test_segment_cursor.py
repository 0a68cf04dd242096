"""Page cursors of streams/warehouse/segments.py: opaque, bound to their segment, rejected clearly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.warehouse.segments import CursorError, decode_cursor, encode_cursor


@given(st.text(), st.text(), st.text())
def test_cursor_round_trips_any_subject_and_person(segment: str, subject: str, person: str) -> None:
    cursor = encode_cursor(segment, subject, person)
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor, segment) == (subject, person)


def test_cursor_of_another_segment_is_refused() -> None:
    with pytest.raises(CursorError, match="belongs to segment 'vip', not 'lapsed'"):
        decode_cursor(encode_cursor("vip", "", "p1"), "lapsed")


@pytest.mark.parametrize("garbage", ["", "!!!", "bm90IGpzb24", "WzEsMiwzXQ", "WyJhIl0"])
def test_garbage_cursor_is_refused(garbage: str) -> None:
    with pytest.raises(CursorError, match="not produced by segment_members"):
        decode_cursor(garbage, "vip")
