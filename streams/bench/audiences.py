"""``omniseg bench audiences``: how fast an ad platform pages through an audience snapshot over the pull
API, and whether the API's memory stays flat as the audience grows.

Against a running stack (``omniseg dev up``), in its own ClickHouse database (dropped afterwards unless
``keep``):

1. Fill ``audience_deltas`` and ``audience_members`` (as the audiences sink writes them) with two
   audiences of one destination: ``small`` with a tenth of ``members`` and ``big`` with ``members``
   (hashes spread over the whole hash space, like SHA-256 hashes).
2. Start a real ``omniseg api serve`` process with that destination's key.
3. Page through each snapshot over HTTP, as a client would, and time it; read the API process's
   resident memory after each (``VmRSS``) and its peak (``VmHWM``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from streams.bench.measure import Report
from streams.dev.probes import http_healthy
from streams.dev.process import free_port
from streams.dev.stack import apply_migrations, clickhouse_client
from streams.settings import Settings

DESTINATION = "bench"

_FILL = """
INSERT INTO {table} (destination_id, audience_id, kind, hash, added, kafka_offset, at, at_ms)
SELECT
    '{destination}', '{audience}', 'email',
    lower(concat(hex(MD5(toString(number + {first}))), hex(MD5(toString(number + {first} + 1000000000))))),
    1, number + {first}, now(), 0
FROM numbers({count})
"""


def _fill(settings: Settings, audiences: dict[str, int]) -> None:
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        first = 0
        for audience, count in audiences.items():
            for table in ("audience_members", "audience_deltas"):
                client.execute(
                    _FILL.format(
                        table=table, destination=DESTINATION, audience=audience, first=first, count=count
                    )
                )
            first += count
        # As the sink records it after each batch (migration 0015).
        client.execute("INSERT INTO audience_frontier (frontier) VALUES", [(first,)])
    finally:
        client.disconnect()


def _destinations_dir(key: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="omniseg-bench-destinations-"))
    (directory / "bench.yaml").write_text(
        f"id: {DESTINATION}\nkind: generic\napi_key_sha256: {hashlib.sha256(key.encode()).hexdigest()}\n"
        "identifiers: [email]\naudiences:\n  - segment: small\n  - segment: big\n"
    )
    return directory


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _page_through(port: int, key: str, audience: str, page_size: int) -> tuple[int, float, int]:
    """(members, seconds, pages) of one whole snapshot over HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Bearer {key}"}
    token: str | None = None
    members = pages = 0
    started = time.perf_counter()
    try:
        while True:
            query = {"page_size": str(page_size)} | ({"page_token": token} if token else {})
            path = f"/v1/destinations/{DESTINATION}/audiences/{audience}/snapshot?"
            path += urllib.parse.urlencode(query)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(
                    f"snapshot page {pages + 1} of {audience}: {response.status} {body[:200]!r}"
                )
            page = json.loads(body)
            members += len(page["members"])
            pages += 1
            token = page["next_page_token"]
            if page["done"]:
                break
    finally:
        conn.close()
    return members, time.perf_counter() - started, pages


def run_audience_bench(
    base: Settings, members: int, page_size: int, keep: bool = False, report: Report = print
) -> dict[str, Any]:
    """Run the snapshot benchmark against the stack ``base`` points at; returns the figures."""
    run = f"b{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"clickhouse_database": f"{base.clickhouse_database}_bench_{run}"})
    apply_migrations(settings, report=lambda _msg: None)
    key = secrets.token_urlsafe(32)
    destinations = _destinations_dir(key)
    port = free_port()
    log_path = Path(f"/tmp/omniseg-bench-audiences-{run}.log")
    proc: subprocess.Popen[bytes] | None = None
    try:
        small = max(1, members // 10)
        report(
            f"filling two audiences ({small:,} and {members:,} members) in {settings.clickhouse_database} ..."
        )
        filled = time.perf_counter()
        _fill(settings, {"small": small, "big": members})
        report(f"filled in {time.perf_counter() - filled:.1f}s; starting the read API on port {port}")
        env = {
            **os.environ,
            "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "OMNISEG_DESTINATIONS_DIR": str(destinations),
            "OMNISEG_API_PORT": str(port),
        }
        omniseg = str(Path(sys.executable).with_name("omniseg"))
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [omniseg, "api", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while not http_healthy(port, "/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the read API did not start; see {log_path}")
            time.sleep(0.2)
        rss_start, _ = _memory_mb(proc.pid)
        figures: dict[str, Any] = {
            "members": members,
            "page_size": page_size,
            "api_rss_mb_at_start": round(rss_start, 1),
        }
        for audience in ("small", "big"):
            count, seconds, pages = _page_through(port, key, audience, page_size)
            rss, peak = _memory_mb(proc.pid)
            rate = count / seconds if seconds else float("nan")
            report(
                f"{audience}: {count:,} members in {pages} pages, {seconds:.2f}s ({rate:,.0f} members/s); "
                f"API RSS {rss:.0f} MB (peak {peak:.0f} MB)"
            )
            figures[audience] = {
                "members": count,
                "pages": pages,
                "seconds": round(seconds, 2),
                "members_per_s": round(rate),
                "api_rss_mb_after": round(rss, 1),
                "api_peak_rss_mb": round(peak, 1),
            }
        return figures
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not keep:
            client = clickhouse_client(settings, "default")
            with contextlib.suppress(Exception):
                client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
            client.disconnect()
