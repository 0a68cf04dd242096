"""A chDB session behind clickhouse-driver's ``Client.execute(sql, params)``, with typed rows.

Lets code written for clickhouse-driver (``%(name)s`` parameters, Python values back: datetimes, ints,
lists) run unchanged on a current ClickHouse in-process. Parameters are substituted with the driver's
own escaping; rows come as JSONCompactEachRowWithNamesAndTypes and are converted by their types.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from clickhouse_driver.util.escape import escape_params

from streams.warehouse import migrations

_CONTEXT = SimpleNamespace(server_info=SimpleNamespace(get_timezone=lambda: "UTC"))
_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")


def _value(type_: str, value: Any) -> Any:
    if value is None:
        return None
    wrapped = _WRAPPER.match(type_)
    if wrapped:
        return _value(wrapped.group(2), value)
    if type_.startswith("Array("):
        return [_value(type_[6:-1], item) for item in value]
    if type_.startswith("DateTime"):
        return datetime.strptime(str(value)[:19], "%Y-%m-%d %H:%M:%S")
    if re.match(r"^U?Int\d+$", type_):
        return int(value)
    if type_.startswith("Float"):
        return float(value)
    return value


class ChdbClient:
    """``execute`` like clickhouse-driver's on a chDB database (SELECTs and statements)."""

    def __init__(self, backend: migrations.ChdbBackend) -> None:
        self.backend = backend

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params is not None:
            sql = sql % escape_params(params, _CONTEXT)
        result = self.backend._session.query(sql, "JSONCompactEachRowWithNamesAndTypes")
        lines = [line for line in result.bytes().decode().splitlines() if line.strip()]
        if len(lines) < 2:
            return []
        types = json.loads(lines[1])
        return [
            tuple(_value(type_, value) for type_, value in zip(types, json.loads(line), strict=True))
            for line in lines[2:]
        ]

    def disconnect(self) -> None:
        pass
