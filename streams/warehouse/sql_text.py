"""Literal values for SQL text, for queries that must run unchanged on clickhouse-driver and chDB.

chDB takes no query parameters, so the few values the use-case queries need are written into the text
through these functions only: strings quoted with backslash escapes, numbers as ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Runs one SELECT and returns its rows: ``client.execute`` or ``ChdbBackend.rows``.
Rows = Callable[[str], list[tuple[Any, ...]]]


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def integer(value: int) -> str:
    return str(int(value))
