"""Every KPI file says what it measures on a fixed first line, and `omniseg kpi list` shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli.kpi import kpi as kpi_command
from streams.warehouse import kpi

# The marketing team's eleven KPIs (docs/kpis.md) and the files that give them.
MARKETING_KPIS = {
    "identity_identified_share",
    "personalised_traffic_share",
    "segments_count",
    "usecases_count",
    "usecase_conversion",
    "funnel_by_channel",
    "scroll_rate",
    "aov_by_channel",
    "returns_by_channel",
    "repeat_visits_purchases",
    "clv_by_segment",
    "clv_top_persons",
}


def test_every_kpi_file_starts_with_a_meaning_line() -> None:
    names = kpi.available()
    assert set(names) >= MARKETING_KPIS
    meanings = {}
    for name in names:
        first, second = (kpi.KPI_DIR / f"{name}.sql").read_text().splitlines()[:2]
        assert first.startswith("-- ") and second == "--", name
        meaning = kpi.describe(name)
        assert meaning == first[3:].strip(), name
        assert 20 <= len(meaning) <= 110 and not meaning.startswith("-") and not meaning.endswith("."), name
        meanings[name] = meaning
    assert len(set(meanings.values())) == len(meanings)  # each says something of its own


def test_a_file_without_a_meaning_line_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bare.sql").write_text("SELECT 1\n")
    (tmp_path / "run_on.sql").write_text("-- Orders per channel, counted\n-- in persons\nSELECT 1\n")
    (tmp_path / "good.sql").write_text("-- Orders per channel in persons\n--\n-- Details.\nSELECT 1\n")
    monkeypatch.setattr(kpi, "KPI_DIR", tmp_path)
    for name in ("bare", "run_on"):
        with pytest.raises(kpi.KpiError, match="meaning"):
            kpi.describe(name)
    assert kpi.describe("good") == "Orders per channel in persons"
    result = CliRunner().invoke(kpi_command, ["list"])
    assert result.exit_code == 1
    assert "good    Orders per channel in persons" in result.output.splitlines()
    assert "run_on  (no meaning: " in result.output


def test_kpi_list_shows_each_kpi_with_its_meaning() -> None:
    result = CliRunner().invoke(kpi_command, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(kpi.available())
    for line, name in zip(lines, kpi.available(), strict=True):
        assert line.startswith(name + " ") and line.endswith(kpi.describe(name))
    assert any("scroll_rate" in line and "Scroll rate on product list pages" in line for line in lines)
