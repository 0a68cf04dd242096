"""``omniseg usecases`` as an operator runs it, against ClickHouse 18.16: check, start (pre-register),
an edit of a running use case refused, a new version, stop."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.settings import Settings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
USECASE = (DEPLOY / "usecases" / "shoes_reminder.yaml").read_text()


def _cli(settings: Settings, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OMNISEG_USECASES_DIR": str(folder),
        "OMNISEG_SEGMENTS_DIR": str(DEPLOY / "segments"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    # A stale compiled build announces itself on stderr; that is not the command's output.
    done.stderr = "".join(
        line for line in done.stderr.splitlines(keepends=True) if not line.startswith("omniseg: running pure")
    )
    return done


def test_start_edit_refused_new_version_stop(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    folder = tmp_path / "usecases"
    folder.mkdir()
    file = folder / "shoes.yaml"
    file.write_text(USECASE)

    listed = _cli(settings, folder, "usecases", "list")
    assert listed.returncode == 0, listed.stderr
    assert "shoes-reminder: not started" in listed.stdout

    started = _cli(settings, folder, "usecases", "start", "shoes-reminder")
    assert started.returncode == 0, started.stderr
    assert "started shoes-reminder v1" in started.stdout

    file.write_text(USECASE.replace("control_share: 0.10", "control_share: 0.20"))
    refused = _cli(settings, folder, "usecases", "start", "shoes-reminder")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "registered fields cannot change (changed: control_share)" in lines[0]
    edited = _cli(settings, folder, "usecases", "list")
    assert "v1 running since" in edited.stdout and "file edited since the start" in edited.stdout

    renewed = _cli(settings, folder, "usecases", "start", "shoes-reminder", "--new-version")
    assert renewed.returncode == 0, renewed.stderr
    assert "stopped shoes-reminder v1" in renewed.stdout and "started shoes-reminder v2" in renewed.stdout

    stopped = _cli(settings, folder, "usecases", "stop", "shoes-reminder")
    assert stopped.returncode == 0 and "stopped shoes-reminder v2" in stopped.stdout
    again = _cli(settings, folder, "usecases", "stop", "shoes-reminder")
    assert again.returncode == 1 and "already stopped" in again.stderr


def test_bad_definitions_and_unknown_ids_get_one_line_each(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    folder = tmp_path / "usecases"
    folder.mkdir()
    (folder / "bad.yaml").write_text(
        USECASE.replace("primary_kpi: conversion_rate", "primary_kpi: happiness")
    )
    (folder / "other.yaml").write_text(
        USECASE.replace("id: shoes-reminder", "id: other").replace(
            "audience: browsed-shoes-not-bought", "audience: nobody"
        )
    )
    checked = _cli(settings, folder, "usecases", "check")
    assert checked.returncode == 2
    lines = checked.stderr.strip().splitlines()
    assert any(
        "bad.yaml: use case 'shoes-reminder': primary_kpi: unknown KPI 'happiness'" in ln for ln in lines
    )
    assert any(
        "other.yaml: use case 'other': audience.segment: unknown segment 'nobody'" in ln for ln in lines
    )
    refused = _cli(settings, folder, "usecases", "start", "shoes-reminder")
    assert refused.returncode == 2  # nothing registered

    (folder / "bad.yaml").write_text(USECASE)
    (folder / "other.yaml").unlink()
    unknown = _cli(settings, folder, "usecases", "start", "nobody")
    assert unknown.returncode == 1 and "no use case 'nobody'" in unknown.stderr
    never = _cli(settings, folder, "usecases", "stop", "shoes-reminder")
    assert never.returncode == 1 and "never started" in never.stderr


def test_plan_and_report(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings = settings_factory()
    folder = tmp_path / "usecases"
    folder.mkdir()
    (folder / "shoes.yaml").write_text(USECASE)
    env_reports = tmp_path / "reports"

    no_history = _cli(settings, folder, "usecases", "plan", "shoes-reminder")
    assert no_history.returncode == 1
    assert (
        no_history.stderr.strip().count("\n") == 0
        and "give `baseline:` in the definition" in no_history.stderr
    )

    (folder / "shoes.yaml").write_text(USECASE + "baseline: 0.08\n")
    planned = _cli(settings, folder, "usecases", "plan", "shoes-reminder")
    assert planned.returncode == 0, planned.stderr
    assert "baseline        0.08 (from the definition)" in planned.stdout
    assert "persons needed" in planned.stdout and "never at the current inflow" in planned.stdout

    never = _cli(settings, folder, "usecases", "report", "shoes-reminder")
    assert never.returncode == 1 and "was never started" in never.stderr

    assert _cli(settings, folder, "usecases", "start", "shoes-reminder").returncode == 0
    html = env_reports / "report.html"
    reported = _cli(settings, folder, "usecases", "report", "shoes-reminder", "--html", str(html))
    assert reported.returncode == 0, reported.stderr
    assert "Use-case report: shoes-reminder v1" in reported.stdout and "conversion_rate" in reported.stdout
    assert f"HTML report: {html}" in reported.stdout and html.read_text().startswith("<!doctype html>")
    assert _cli(settings, folder, "usecases", "report", "shoes-reminder", "--version", "3").returncode == 1
