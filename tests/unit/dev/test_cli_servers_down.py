"""Every command that needs Kafka or ClickHouse fails fast, in one line, when the server is down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.dev.process import free_port, release_port

ROOT = Path(__file__).resolve().parents[3]

KAFKA_COMMANDS = [
    ["segments", "list"],
    ["segments", "apply", "deploy/segments"],
    ["segments", "apply", "deploy/segments", "--dry-run"],
    ["topics", "create"],
    ["catalog", "list"],
    ["catalog", "import", "deploy/examples/catalog.csv"],
    ["import", "--channel", "store", "deploy/examples/pos_export.csv"],
]
CLICKHOUSE_COMMANDS = [
    ["person", "show", "ann@shop.com"],
    ["kpi", "run", "segments_count"],
    ["migrate"],
]


@pytest.fixture(scope="module")
def closed_port() -> object:
    """A port reserved for this test and listened on by nobody: connections are refused."""
    port = free_port()
    yield port
    release_port(port)


def _run(args: list[str], port: int) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        **os.environ,
        "OMNISEG_ENV_FILE": "/nonexistent/omniseg.env",
        "OMNISEG_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "OMNISEG_CLICKHOUSE_PORT": str(port),
        # No warning about a stale compiled build in the output under test.
        "OMNISEG_PURE_PYTHON": "1",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("server", "args"),
    [("Kafka", a) for a in KAFKA_COMMANDS] + [("ClickHouse", a) for a in CLICKHOUSE_COMMANDS],
)
def test_a_command_fails_fast_in_one_line_when_its_server_is_down(
    server: str, args: list[str], closed_port: int
) -> None:
    done, seconds = _run(args, closed_port)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, done
    assert len(lines) == 1, lines[:20]
    assert f"cannot reach {server} at 127.0.0.1:{closed_port}" in lines[0]
    assert "Traceback" not in done.stderr
    assert seconds < 15, f"{args} took {seconds:.1f} s to fail"
