"""The HTML report in a real headless browser (Debian's chromium): the charts are drawn. The page is
rendered from a file with no network, the DOM checked for the chart's path, and a screenshot checked
for the lift line's blue pixels (and the page without data for none)."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from streams.domain.experiments.report import build
from streams.domain.experiments.usecases import load_usecases
from streams.reports.usecase_html import render_html
from tests.unit.reports.report_factory import DEFINITION, sample_report

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
LINE_BLUE = (0x1F, 0x5F, 0xBF)

if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium: run scripts/setup_browser_tests.sh", allow_module_level=True)


def _chromium(page: Path, profile: Path, *flags: str) -> bytes:
    """Run headless chromium on ``page`` with ``flags``; stdout. Stopped by pid (its whole group)."""
    proc = subprocess.Popen(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", f"--user-data-dir={profile}", "--window-size=1000,1600",
            *flags, page.as_uri(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=90)
        return out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced PNG (what chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    raw, stride = zlib.decompress(data), width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(row) for row in rows] if channels == 3 else [_rgb(row) for row in rows]


def _rgb(row: bytes) -> bytes:
    return b"".join(row[i : i + 3] for i in range(0, len(row), 4))


def _line_pixels(png: bytes) -> int:
    width, _, rows = _pixels(png)
    count = 0
    for row in rows:
        for x in range(width):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            count += abs(r - LINE_BLUE[0]) < 24 and abs(g - LINE_BLUE[1]) < 24 and abs(b - LINE_BLUE[2]) < 24
    return count


def test_the_cumulative_lift_chart_is_drawn(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(sample_report(days=14)), encoding="utf-8")
    dom = _chromium(page, tmp_path / "profile-dom", "--dump-dom").decode()
    line = re.search(r'<path class="lift-line" d="(M[^"]+)"', dom)
    assert line and line.group(1).count("L") == 13, dom[:500]
    assert 'id="kpi-lifts"' in dom

    shot = tmp_path / "report.png"
    _chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert _line_pixels(shot.read_bytes()) > 300  # the 2.5 px line across the chart

    (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    empty = tmp_path / "empty.html"
    empty.write_text(render_html(build(usecase, 1, at, None, [], contaminated=0, generated_at=at)))
    blank = tmp_path / "empty.png"
    _chromium(empty, tmp_path / "profile-empty", f"--screenshot={blank}")
    assert _line_pixels(blank.read_bytes()) < 20
