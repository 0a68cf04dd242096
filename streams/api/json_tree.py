"""Parsed JSON from a request, walked without recursion: how deep it nests, and its bytes at any depth.

orjson parses up to 1024 levels, but Python code that recurses per level stops at about 1000 frames
(``json.dumps``, ``json.loads``) and orjson itself serializes only 254 levels. Everything here loops
instead of recursing, so any value orjson parsed can be measured and written back.
"""

from __future__ import annotations

from typing import Any

import orjson

# A tuple, not ``dict | list``: isinstance checks a tuple faster, and runs on every value of a call.
_CONTAINERS = (dict, list)


def nesting_depth(value: Any) -> int:
    """How many objects and arrays nest at the deepest point of ``value`` (a scalar is 0, ``{}`` is 1)."""
    # One level at a time, as a flat comprehension: every call pays this walk, so it is kept cheap.
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, _CONTAINERS)
        ]
    return depth


def json_bytes(value: Any) -> bytes:
    """Compact JSON for a parsed value, at any depth and with integers beyond 64 bits kept exact."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # orjson refuses integers beyond 64 bits and more than 254 levels; write it piece by piece.
        pass
    out: list[bytes] = []
    # Pending work, last first: a bytes object is literal output, anything else a value to write.
    # Parsed JSON never holds bytes, so the two cannot be confused.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, dict):
            stack.append(b"}")
            entries = list(item.items())
            for position in range(len(entries) - 1, -1, -1):
                key, child = entries[position]
                stack.append(child)
                stack.append((b"," if position else b"") + orjson.dumps(str(key)) + b":")
            stack.append(b"{")
        elif isinstance(item, list):
            stack.append(b"]")
            for position in range(len(item) - 1, -1, -1):
                stack.append(item[position])
                if position:
                    stack.append(b",")
            stack.append(b"[")
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(str(item).encode())
        else:
            out.append(orjson.dumps(item))
    return b"".join(out)
