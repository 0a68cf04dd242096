"""Load for a running collector: pre-built ``/v1/batch`` bodies posted from several threads.

Starts nothing itself; point it at a collector (``omniseg collector serve``) whose broker has the topics
and whose rate limit per write key is off (``OMNISEG_COLLECTOR_RATE_LIMIT_PER_S=0``) or above the load:
the load is one write key at full speed, beyond the default limit, and a 429 counts as a failed request.
"""

from __future__ import annotations

import base64
import http.client
import statistics
import threading
import time
import uuid
from typing import Any

import orjson

from streams.settings import Settings

_PAGES = ("/", "/c/shoes", "/p/sku-1", "/p/sku-2", "/cart", "/checkout")


def _call(index: int, run: str) -> dict[str, Any]:
    user = f"bench-user-{index % 5000}"
    anonymous = f"{run}-anon-{index % 20000}"
    common: dict[str, Any] = {
        "messageId": f"{run}-{index}",
        "anonymousId": anonymous,
        "timestamp": "2024-05-01T12:00:00.000Z",
        "context": {
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) bench",
            "page": {"url": f"https://shop.example{_PAGES[index % len(_PAGES)]}"},
            "library": {"name": "analytics.js", "version": "4.1.0"},
        },
    }
    kind = index % 10
    if kind < 6:
        return {
            **common,
            "type": "track",
            "userId": user if index % 3 else None,
            "event": "Product Viewed",
            "properties": {"sku": f"SKU-{index % 500}", "price": 19.99, "currency": "EUR"},
        }
    if kind < 9:
        return {**common, "type": "page", "name": "Product", "properties": {"path": _PAGES[index % 6]}}
    return {
        **common,
        "type": "identify",
        "userId": user,
        "traits": {"email": f"{user}@example.com", "plan": "gold"},
    }


def build_batches(events: int, batch_size: int) -> list[bytes]:
    """``/v1/batch`` bodies holding ``events`` distinct Segment calls (track, page, identify)."""
    run = uuid.uuid4().hex[:12]
    bodies = []
    for start in range(0, events, batch_size):
        calls = [_call(i, run) for i in range(start, min(start + batch_size, events))]
        bodies.append(orjson.dumps({"batch": calls, "sentAt": "2024-05-01T12:00:01.000Z"}))
    return bodies


def run_collector_bench(
    settings: Settings,
    events: int = 100_000,
    concurrency: int = 4,
    *,
    batch_size: int = 250,
    write_key: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """Post ``events`` calls in batches from ``concurrency`` threads; report events/s and latency."""
    if not 1 <= batch_size <= 2000:
        raise ValueError(f"batch_size must be between 1 and 2000, got {batch_size}")
    if write_key is None:
        if not settings.sources:
            raise ValueError("no write key: configure OMNISEG_SOURCES or pass write_key")
        write_key = next(iter(settings.sources))
    host = host or settings.collector_host
    port = port or settings.collector_port
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode(),
    }
    bodies = build_batches(events, batch_size)
    warmup = build_batches(batch_size, batch_size)
    latencies: list[float] = []
    failures: list[str] = []
    acknowledged = [0]
    lock = threading.Lock()
    next_body = iter(range(len(bodies)))

    def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        conn.request("POST", "/v1/batch", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=settings.produce_timeout_s + 30)
        try:
            while True:
                with lock:
                    index = next(next_body, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    status, answer = post(conn, bodies[index])
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    with lock:
                        failures.append(f"batch {index}: {exc!r}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                        acknowledged[0] += min(batch_size, events - index * batch_size)
                    else:
                        failures.append(f"batch {index}: HTTP {status} {answer[:200]!r}")
        finally:
            conn.close()

    warm = http.client.HTTPConnection(host, port, timeout=settings.produce_timeout_s + 30)
    try:
        status, answer = post(warm, warmup[0])
    finally:
        warm.close()
    if status != 200:
        raise RuntimeError(f"the collector refused the warm-up batch: HTTP {status} {answer[:300]!r}")

    threads = [threading.Thread(target=worker, name=f"bench-{n}") for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "events": events,
        "events_acknowledged": acknowledged[0],
        "batch_size": batch_size,
        "concurrency": concurrency,
        "requests_ok": len(latencies),
        "requests_failed": len(failures),
        "failures": failures[:10],
        "seconds": round(seconds, 3),
        "events_per_s": round(acknowledged[0] / seconds, 1) if seconds else 0.0,
        "latency_p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "latency_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)
        if ordered
        else None,
    }
