"""Every KPI file says what it measures on its first line, and `omniseg kpi list` shows it."""

from __future__ import annotations

from click.testing import CliRunner

from streams.cli.kpi import kpi as kpi_command
from streams.warehouse import kpi


def test_every_kpi_file_starts_with_its_meaning() -> None:
    names = kpi.available()
    assert len(names) >= 19
    for name in names:
        meaning = kpi.describe(name)
        assert len(meaning) > 20 and not meaning.startswith("-"), name


def test_kpi_list_shows_each_kpi_with_its_meaning() -> None:
    result = CliRunner().invoke(kpi_command, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(kpi.available())
    assert any(
        line.startswith("usecase_conversion") and "Conversion rate per use case" in line for line in lines
    )
