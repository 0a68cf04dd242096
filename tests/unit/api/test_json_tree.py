"""Depth and bytes of parsed JSON at any nesting, without recursion (orjson parses 1024 levels)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.api.json_tree import json_bytes, nesting_depth

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=30,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def chain_text(levels: int) -> bytes:
    """``levels`` objects and arrays nested in each other (an even number)."""
    return b'{"a":[' * (levels // 2) + b"7" + b"]}" * (levels // 2)


@given(JSON_VALUES)
def test_depth_matches_the_recursive_definition(value: Any) -> None:
    assert nesting_depth(value) == reference_depth(value)


@given(JSON_VALUES)
def test_bytes_read_back_as_the_same_value(value: Any) -> None:
    assert json.loads(json_bytes(value)) == value


def test_scalars_and_empty_containers() -> None:
    values: list[Any] = [None, 1, "s", {}, [], [[]], {"a": {"b": 1}}]
    assert [nesting_depth(v) for v in values] == [0, 0, 0, 1, 1, 2, 2]


def test_depth_and_bytes_at_the_parsers_limit() -> None:
    # Compared as text: == on values this deep would itself recurse too far.
    text = chain_text(1024)
    deep = orjson.loads(text)
    assert nesting_depth(deep) == 1024
    assert json_bytes(deep) == text


def test_bytes_keep_integers_beyond_64_bits_exact_at_any_depth() -> None:
    value = orjson.loads(b"[" * 600 + b"0" + b"]" * 600)
    inner = value
    for _ in range(599):
        inner = inner[0]
    inner[0] = 2**70
    text = json_bytes(value)
    assert text == b"[" * 600 + str(2**70).encode() + b"]" * 600


def test_shallow_values_are_written_exactly_as_orjson_writes_them() -> None:
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": -3}}
    assert json_bytes(value) == orjson.dumps(value)
    big = {"a": [2**64, 1.5, "x"], "b": {}}
    assert json_bytes(big) == b'{"a":[18446744073709551616,1.5,"x"],"b":{}}'
