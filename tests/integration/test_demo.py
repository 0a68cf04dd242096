"""The demo end to end: stack, worker and collector processes, stream in, ClickHouse out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.dev.process import free_port

pytestmark = pytest.mark.integration


def test_demo_lands_every_accepted_event_and_prints_kpis(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMNISEG_DEV_STATE_DIR": str(tmp_path / "state"),
        "OMNISEG_ENV_FILE": str(tmp_path / "state" / "omniseg.env"),
        "OMNISEG_DEV_KAFKA_PORT": str(free_port()),
        "OMNISEG_DEV_CLICKHOUSE_PORT": str(free_port()),
        "OMNISEG_DEV_CLICKHOUSE_HTTP_PORT": str(free_port()),
        "OMNISEG_COLLECTOR_PORT": str(free_port()),
    }
    cli = [sys.executable, "-m", "streams.cli"]
    try:
        result = subprocess.run(
            [*cli, "demo", "--customers", "40", "--days", "3", "--down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        accepted = re.search(r"accepted ([\d,]+), rejected 3", result.stdout)
        assert accepted, result.stdout
        landed = re.search(r"all ([\d,]+) events visible in ClickHouse", result.stdout)
        assert landed and landed.group(1) == accepted.group(1)
        for title in ("Events per channel", "funnel per channel", "revenue per channel", "Rejected records"):
            assert title in result.stdout
        assert "unknown call type 'purchase'" in result.stdout
    finally:
        subprocess.run([*cli, "dev", "down"], env=env, capture_output=True, timeout=60)
    assert not list((tmp_path / "state").glob("*.pid")), "every process the demo started must be stopped"
