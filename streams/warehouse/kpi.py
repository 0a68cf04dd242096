"""KPI queries kept as SQL files under ``deploy/kpi/`` and run against ClickHouse.

Each file is one SELECT over unqualified table names; it runs in the configured database on ClickHouse
18.16 and on a current ClickHouse (``tests/integration/warehouse/test_kpi_queries.py`` runs every file
on both). Each file starts with a fixed header line ``-- <meaning>`` (what it measures, in one line; see
``describe``) and a line ``--``; the comment lines after them say what it reads and what each column
means. ``docs/kpis.md`` describes every KPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_driver import Client

KPI_DIR = Path(__file__).resolve().parent.parent.parent / "deploy" / "kpi"


class KpiError(LookupError):
    """A KPI query is unknown; the message lists the known ones."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def render(self) -> str:
        """A plain text table for terminals."""
        cells = [self.columns, *[[_fmt(value) for value in row] for row in self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        if not self.rows:
            lines.append("(no rows)")
        return "\n".join(line.rstrip() for line in lines)


def _fmt(value: Any) -> str:
    if value is None:  # NULL: no figure (e.g. a share of no events)
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def available() -> list[str]:
    return sorted(path.stem for path in KPI_DIR.glob("*.sql"))


def describe(name: str) -> str:
    """What the KPI measures: the first line of its file, ``-- <meaning>``, which a line ``--`` ends
    (the header's details follow it). ``omniseg kpi list`` shows it."""
    lines = sql(name).splitlines()
    if len(lines) < 2 or not lines[0].startswith("-- ") or not lines[0][3:].strip() or lines[1] != "--":
        raise KpiError(f"{name}.sql does not start with a '-- <meaning>' line and a '--' line")
    return lines[0][3:].strip()


def sql(name: str) -> str:
    path = KPI_DIR / f"{name}.sql"
    if not path.exists():
        raise KpiError(f"no KPI query {name!r}; known: {', '.join(available())}")
    return path.read_text()


def run(client: Client, name: str) -> Table:
    """Run ``deploy/kpi/<name>.sql`` on a client already connected to the omniseg database."""
    rows, types = client.execute(sql(name), with_column_types=True)
    return Table([column for column, _ in types], [tuple(row) for row in rows])
