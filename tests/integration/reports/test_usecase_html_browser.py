"""The use-case report's HTML page (streams/reports/usecase_html.py) in Debian's headless Chromium: the
cumulative-lift chart is really drawn, on a page that loads nothing and runs no script of its own.

Each test starts ``chromium --headless`` once per page, with a fresh ``--user-data-dir``, in its own
process group, and stops that group by pid in a ``finally``. Two runs per page:

* ``--dump-dom`` of a *probe copy*: the page with its Content-Security-Policy removed and a small script
  added that measures, on ``load``, what the browser made of the SVG (path lengths, bounding boxes, the
  chart's place on the page), how many resources it fetched and what text the hypothesis became, and
  writes that as JSON into an attribute of ``<body>``.
* ``--screenshot`` of the page *as rendered* (CSP on, no script) at the same window size, so the same
  layout: the PNG is decoded with the stdlib and the chart's region must show the line and the band.

``scripts/setup_browser_tests.sh`` installs Chromium (``scripts/test.sh`` runs it).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams.reports import charts
from streams.reports.usecase_html import render_html
from tests.unit.reports.factory import HYPOTHESIS, make_report

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1100, 2400)  # CSS px at device scale 1: the whole page fits, so the screenshot holds the chart

if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium: run scripts/setup_browser_tests.sh", allow_module_level=True)

PROBE = """<script>
window.addEventListener("load", () => {
  const box = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height};
  };
  const svg = document.getElementById("cumulative-lift");
  const line = svg && svg.querySelector("path.lift-line");
  const band = svg && svg.querySelector("path.ci-band");
  const out = {
    chart: box(svg), line: box(line), band: box(band),
    lineLength: line ? line.getTotalLength() : 0,
    bandArea: band ? band.getBBox().width * band.getBBox().height : 0,
    forestRows: document.querySelectorAll("#relative-lift-forest .forest-row").length,
    resources: performance.getEntriesByType("resource").length,
    scripts: document.scripts.length,
    hypothesis: [...document.querySelectorAll("dl.header dt")]
      .find((dt) => dt.textContent === "Hypothesis").nextElementSibling.textContent,
    noData: [...document.querySelectorAll("p.no-data")].map((p) => p.textContent),
    clipped: [...document.querySelectorAll(".scroll, svg")]
      .filter((el) => el.scrollWidth > el.clientWidth
                      || el.getBoundingClientRect().right > document.documentElement.clientWidth)
      .map((el) => el.id || el.firstElementChild.className),
  };
  document.body.setAttribute("data-probe", JSON.stringify(out));
});
</script>"""


def run_chromium(args: list[str], timeout_s: float = 60.0) -> bytes:
    """One headless Chromium run with a fresh profile, in its own process group; its stdout. The group
    is stopped by pid however the run ends."""
    profile = Path(tempfile.mkdtemp(prefix="omniseg-chromium-"))
    width, height = WINDOW
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile / 'profile'}",
    ]
    with (profile / "chromium.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(CHROMIUM), *flags, *args], stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        tail = (profile / "chromium.log").read_text(errors="replace")[-2000:]
        assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {tail}"
        return out
    finally:
        # The process group is Chromium's own (start_new_session): its pid is the group's id.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def probe(page: str, tmp: Path) -> dict[str, Any]:
    """What Chromium made of ``page``: the probe copy's measurements (see the module docstring)."""
    csp = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>\n?')
    assert len(csp.findall(page)) == 1
    copy = tmp / "probe.html"
    copy.write_text(csp.sub("", page).replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(["--dump-dom", copy.as_uri()]).decode()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, f"the probe reported nothing: {dom[-500:]}"
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return measured


def screenshot(page: str, tmp: Path) -> Image:
    original = tmp / "report.html"
    original.write_text(page, encoding="utf-8")
    png = tmp / "report.png"
    run_chromium([f"--screenshot={png}", original.as_uri()])
    return Image.read(png.read_bytes())


class Image:
    """An 8-bit RGB or RGBA PNG, decoded with the stdlib (zlib and the five PNG row filters)."""

    def __init__(self, width: int, height: int, channels: int, rows: list[bytes]) -> None:
        self.width, self.height, self.channels, self.rows = width, height, channels, rows

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = x * self.channels
        r, g, b = self.rows[y][i : i + 3]
        return r, g, b

    @classmethod
    def read(cls, data: bytes) -> Image:
        assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        pos, chunks, header = 8, [], b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
            pos += 12 + length
            if kind == b"IHDR":
                header = body
            elif kind == b"IDAT":
                chunks.append(body)
        width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
        assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
        ch = 3 if color == 2 else 4
        raw, stride = zlib.decompress(b"".join(chunks)), width * ch
        prev, rows = bytearray(stride), []
        for y in range(height):
            start = y * (stride + 1)
            kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
            for i in range(stride) if kind else ():
                a = line[i - ch] if i >= ch else 0
                b, c = prev[i], prev[i - ch] if i >= ch else 0
                if kind == 1:
                    line[i] = (line[i] + a) & 255
                elif kind == 2:
                    line[i] = (line[i] + b) & 255
                elif kind == 3:
                    line[i] = (line[i] + ((a + b) >> 1)) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            rows.append(bytes(line))
            prev = line
        return cls(width, height, ch, rows)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def column_coverage(image: Image, box: dict[str, float] | None, colour: str, tolerance: int) -> float:
    """The share of the pixel columns inside ``box`` (page px) that hold a pixel near ``colour``."""
    if not box or box["width"] < 10 or box["height"] < 1:
        return 0.0
    want = _rgb(colour)
    x0, x1 = int(box["x"]) + 2, int(box["x"] + box["width"]) - 2
    y0, y1 = max(0, int(box["y"]) - 3), min(image.height, int(box["y"] + box["height"]) + 3)
    hits = sum(
        any(
            max(abs(p - w) for p, w in zip(image.pixel(x, y), want, strict=True)) <= tolerance
            for y in range(y0, y1)
        )
        for x in range(x0, x1)
    )
    return hits / max(1, x1 - x0)


def chart_problems(measured: dict[str, Any], image: Image) -> list[str]:
    """Why the cumulative-lift chart is not drawn, from the probe and the screenshot; [] when it is."""
    problems = []
    chart = measured["chart"]
    if not chart or chart["width"] < 300 or chart["height"] < 150:
        return [f"no visible svg#cumulative-lift: {chart}"]
    if chart["y"] + chart["height"] > image.height:
        return [f"the chart ends below the screenshot ({image.height} px): raise WINDOW"]
    if measured["lineLength"] < 100:
        problems.append(f"the lift line is {measured['lineLength']} px long")
    if measured["bandArea"] < 1000:
        problems.append(f"the CI band covers {measured['bandArea']} px²")
    line = column_coverage(image, measured["line"], charts.LINE, 40)
    if line < 0.9:
        problems.append(f"the lift line's colour shows in {line:.0%} of its columns")
    band = column_coverage(image, measured["band"], charts.BAND, 6)
    if band < 0.9:
        problems.append(f"the CI band's colour shows in {band:.0%} of its columns")
    return problems


def test_report_page_draws_the_cumulative_lift_chart_and_loads_nothing(tmp_path: Path) -> None:
    page = render_html(make_report())
    measured = probe(page, tmp_path)
    assert measured["resources"] == 0  # no script, font, stylesheet or image fetched
    assert measured["scripts"] == 1  # the probe's own: the hypothesis' <script> stayed text
    assert measured["hypothesis"] == HYPOTHESIS
    assert measured["forestRows"] == 3
    assert measured["clipped"] == []  # every table and chart fits the page's width
    assert chart_problems(measured, screenshot(page, tmp_path)) == []


def test_the_check_sees_a_chart_without_line_and_band(tmp_path: Path) -> None:
    """The same page with the lift line's and the band's ``d`` emptied: the check must complain."""
    page = render_html(make_report())
    blank = re.sub(r'(class="(?:lift-line|ci-band)" d=")[^"]*"', r'\1"', page)
    assert blank != page
    problems = chart_problems(probe(blank, tmp_path), screenshot(blank, tmp_path))
    assert any("lift line" in p for p in problems), problems
    assert any("CI band" in p for p in problems), problems


def test_report_without_cumulative_points_says_not_enough_data(tmp_path: Path) -> None:
    measured = probe(render_html(replace(make_report(), cumulative=())), tmp_path)
    assert measured["chart"] is None
    assert any("not enough data yet" in text for text in measured["noData"])
    assert measured["forestRows"] == 3
