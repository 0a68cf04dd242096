"""Cursors and snapshot page tokens of the audience API: round trips, and nothing else accepted."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.warehouse.audience_cursors import (
    MAX_CURSOR,
    MAX_RANGES,
    CursorError,
    PageToken,
    decode_page_token,
    encode_page_token,
    format_cursor,
    hash_range,
    parse_cursor,
    ranges_for,
)


@st.composite
def tokens(draw: st.DrawFn) -> PageToken:
    ranges = draw(st.integers(2, MAX_RANGES))
    return PageToken(draw(st.integers(0, MAX_CURSOR)), ranges, draw(st.integers(1, ranges - 1)))


@given(tokens(), st.text(min_size=1), st.text(min_size=1))
def test_page_tokens_round_trip_for_their_own_audience_only(
    token: PageToken, dest: str, audience: str
) -> None:
    text = encode_page_token(token, dest, audience)
    assert text.isascii() and "=" not in text and len(text) <= 200
    assert decode_page_token(text, dest, audience) == token
    with pytest.raises(CursorError, match="another audience"):
        decode_page_token(text, dest, audience + "x")


def _raw(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        "bm9wZQ",  # 'nope'
        _raw([1, 5, 16]),
        _raw([2, 5, 16, 1, "x"]),  # an unknown version
        _raw([1, -1, 16, 1, "0" * 12]),
        _raw([1, 5, 2**24 + 1, 1, "0" * 12]),  # more ranges than a snapshot has
        _raw([1, 5, 16, 0, "0" * 12]),  # page 0 is the first page: it has no token
        _raw([1, 5, 16, 16, "0" * 12]),
        _raw([1, 5.0, 16, 1, "0" * 12]),
        _raw([1, True, 16, 1, "0" * 12]),
        _raw([1, 5, 16, 1, "not a tag"]),
        _raw({"cursor": 5}),
    ],
)
def test_anything_else_is_not_a_page_token(text: str) -> None:
    with pytest.raises(CursorError, match="is not a page token of this API; start the snapshot again"):
        decode_page_token(text, "google", "vip")


def test_a_token_written_differently_is_refused() -> None:
    text = encode_page_token(PageToken(5, 16, 1), "google", "vip")
    body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    spaced = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(CursorError, match="not a page token"):
        decode_page_token(spaced, "google", "vip")


@given(st.integers(0, MAX_CURSOR))
def test_cursors_round_trip(cursor: int) -> None:
    assert parse_cursor(format_cursor(cursor)) == cursor


@pytest.mark.parametrize("text", ["", "-1", "+1", "01", "1.0", "1e3", " 1", "abc", str(MAX_CURSOR + 1), "٣"])
def test_malformed_cursors_are_refused(text: str) -> None:
    with pytest.raises(CursorError, match="take a new snapshot when in doubt"):
        parse_cursor(text)


def test_ranges_are_the_fewest_that_keep_a_page_to_about_its_size() -> None:
    assert [ranges_for(size, 1000) for size in (0, 1, 1000, 1001, 16_000, 16_001)] == [1, 1, 1, 2, 16, 17]
    assert ranges_for(10**20, 1) == MAX_RANGES


def test_hash_ranges_split_the_space_into_equal_prefixes() -> None:
    assert hash_range(1, 0) == (None, None)
    assert [hash_range(16, k) for k in (0, 1, 15)] == [
        (None, "10000000"),
        ("10000000", "20000000"),
        ("f0000000", None),
    ]
    assert hash_range(3, 1) == ("55555555", "aaaaaaaa")
    with pytest.raises(ValueError):
        hash_range(16, 16)
    with pytest.raises(ValueError):
        hash_range(MAX_RANGES + 1, 0)


@given(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), st.integers(1, 5000))
def test_every_hash_is_in_exactly_one_range(value: str, ranges: int) -> None:
    def inside(page: int) -> bool:
        lo, hi = hash_range(ranges, page)
        return (lo is None or value >= lo) and (hi is None or value < hi)

    # the range whose prefix interval holds the hash's first 8 digits
    prefix = int(value[:8], 16)
    expected = next(k for k in range(ranges) if prefix < (k + 1) * 16**8 // ranges)
    assert [page for page in range(ranges) if inside(page)] == [expected]
