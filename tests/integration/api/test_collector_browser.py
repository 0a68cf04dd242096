"""The real analytics.js (``@segment/analytics-next`` from npm, tests/browser/) in Debian's headless
Chromium, on a page of another origin than the collector: page, identify and track, in standard and
in batching delivery, land exactly once in ``events_dedup`` and resolve to one person, through the
real collector, broker, ``omniseg worker`` and ClickHouse. A page of an origin no source allows
delivers nothing.

``scripts/setup_browser_tests.sh`` installs Chromium and the npm package (``scripts/test.sh`` runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi import FastAPI, Request, Response

from streams.api.collector import create_app
from streams.api.server import ThreadedServer
from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.events import Event
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
BUNDLES = ROOT / "tests" / "browser" / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
CHROMIUM = Path("/usr/bin/chromium")
OMNISEG = str(Path(sys.executable).with_name("omniseg"))
WEB_KEY = "wk_browser_web_0001"
OTHER_KEY = "wk_browser_other_01"

if not CHROMIUM.exists() or not (BUNDLES / "index.js").exists():
    pytest.skip(
        "needs /usr/bin/chromium and tests/browser/node_modules: run scripts/setup_browser_tests.sh",
        allow_module_level=True,
    )

# The page: loads the UMD bundle from its own origin (its lazy chunks too: `_cdn` points the bundle's
# public path there), settings inline so nothing asks Segment's CDN, remote metrics off. It reports
# the message ids and the anonymous id to its own server when every call was made.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>omniseg browser test</title></head><body>
<script>window.analytics = {_cdn: location.origin}; window.CONFIG = %(config)s;</script>
<script src="/analytics-next/bundles/index.js"></script>
<script>
(async () => {
  const cfg = window.CONFIG;
  const out = {ids: {}, errors: [], blocked: null, wrongKeyStatus: null};
  try {
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      {writeKey: cfg.writeKey,
       cdnSettings: {integrations: {"Segment.io": {apiKey: cfg.writeKey}}, metrics: {sampleRate: 0}}},
      {integrations: {"Segment.io": {apiHost: cfg.apiHost, protocol: "http",
                                     deliveryStrategy: cfg.delivery}},
       retryQueue: cfg.retry, disableClientPersistence: true});
    analytics.on("error", (e) => out.errors.push(String(e && (e.reason || e.code))));
    let ctx = await analytics.page("Shop", "Home", {path: "/"});
    out.ids.page = ctx.event.messageId;
    ctx = await analytics.identify(cfg.userId, {email: cfg.userId + "@shop.example"});
    out.ids.identify = ctx.event.messageId;
    ctx = await analytics.track("Product Viewed", {sku: "SKU-1", price: 9.5});
    out.ids.track = ctx.event.messageId;
    out.anonymousId = analytics.user().anonymousId();
    // What the browser does with a direct call: a TypeError when CORS blocks it.
    try {
      const r = await fetch("http://" + cfg.apiHost + "/t", {method: "POST",
        headers: {"Content-Type": "text/plain", "Authorization": "Basic " + btoa(cfg.writeKey + ":")},
        body: JSON.stringify({type: "track", event: "Probe", anonymousId: "probe",
                              messageId: "probe-" + cfg.userId})});
      out.blocked = false; out.probeStatus = r.status;
    } catch (e) { out.blocked = true; }
    if (cfg.wrongKey) {
      const r = await fetch("http://" + cfg.apiHost + "/t", {method: "POST",
        headers: {"Content-Type": "text/plain", "Authorization": "Basic " + btoa(cfg.wrongKey + ":")},
        body: JSON.stringify({type: "track", event: "Probe", anonymousId: "probe"})});
      out.wrongKeyStatus = r.status; out.wrongKeyBody = await r.json();
    }
  } catch (e) { out.errors.push("page: " + e); }
  await fetch("/report", {method: "POST", body: JSON.stringify(out)});
})();
</script></body></html>
"""


@dataclass
class PageServer:
    """Serves the test page and the analytics-next bundle; collects the page's report."""

    port: int
    config: dict[str, Any] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    reported: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/page.html":
                    page = PAGE % {"config": json.dumps(server.config)}
                    self._send(200, page.encode(), "text/html; charset=utf-8")
                    return
                prefix = "/analytics-next/bundles/"
                name = path[len(prefix) :] if path.startswith(prefix) else ""
                file = BUNDLES / name
                if name and "/" not in name and file.is_file():
                    self._send(200, file.read_bytes(), "text/javascript")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.reports.append(json.loads(body))
                server.reported.set()
                self._send(204, b"", "text/plain")

        return Handler


def recording(app: FastAPI, seen: list[tuple[str, str, int]]) -> FastAPI:
    """``app`` noting each request's method, path and answer status in ``seen``."""

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        seen.append((request.method, request.url.path, response.status_code))
        return response

    return app


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    page = PageServer(free_port())
    httpd = ThreadingHTTPServer(("127.0.0.1", page.port), page.handler())
    thread = threading.Thread(target=httpd.serve_forever, name="browser-test-page", daemon=True)
    thread.start()
    try:
        yield page
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@contextmanager
def chromium(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Headless Chromium on ``url`` with a fresh profile, in its own process group; stopped by pid."""
    profile = Path(tempfile.mkdtemp(prefix="omniseg-chromium-"))
    log = (profile / "chromium.log").open("wb")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile / 'profile'}",
    ]
    proc = subprocess.Popen(
        [str(CHROMIUM), *flags, url], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
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
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def run_page(page: PageServer, host: str, config: dict[str, Any], timeout_s: float = 90.0) -> dict[str, Any]:
    """Open the test page on ``http://host:port`` in Chromium and return what the page reported."""
    page.config = config
    page.reports.clear()
    page.reported.clear()
    with chromium(f"http://{host}:{page.port}/page.html") as proc:
        deadline = time.monotonic() + timeout_s
        while not page.reported.wait(0.5):
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited with {proc.returncode} before the page reported")
            if time.monotonic() > deadline:
                raise AssertionError(f"the page reported nothing within {timeout_s}s")
    report = page.reports[0]
    assert not report["errors"], report
    return report


class Worker:
    """``omniseg worker`` (identity, history and identity sinks) on the test's settings; stopped by pid."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.log = log
        self.env = {
            **os.environ,
            "OMNISEG_ENV_FILE": "/nonexistent/omniseg.env",
            "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
            "OMNISEG_SINK_GROUP": settings.sink_group,
            "OMNISEG_IDENTITY_GROUP": settings.identity_group,
            "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "OMNISEG_SINK_FLUSH_INTERVAL_S": "0.2",
            "OMNISEG_SEGMENTS_ENABLED": "false",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [OMNISEG, "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def topic_message_ids(settings: Settings, topic: str) -> list[str]:
    """The messageId of every record on ``topic`` now (read up to the high watermarks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        wanted = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        ids: list[str] = []
        read = {p: 0 for p in wanted}
        deadline = time.monotonic() + 30
        while any(read[p] < end for p, end in wanted.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end")
            for message in consumer.consume(100, 0.2):
                if message.error():
                    raise AssertionError(f"consumer error: {message.error()}")
                read[message.partition()] = message.offset() + 1
                ids.append(Event.from_avro(EVENT_CODEC.decode(message.value())).messageId)
        return ids
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; worker log:\n{log()[-3000:]}"
            )
        time.sleep(0.2)


@pytest.fixture
def web_settings(settings_factory: Callable[..., Settings], page_server: PageServer) -> Settings:
    page_origin = f"http://127.0.0.1:{page_server.port}"
    return settings_factory(
        sources={
            WEB_KEY: Source(name="shop-web", channel="web", allowed_origins=[page_origin]),
            OTHER_KEY: Source(name="shop-app", channel="app"),
        }
    )


DELIVERIES = {
    "standard": None,
    # Three calls, a batch of three: one POST to /b.
    "batching": {"strategy": "batching", "config": {"size": 3, "timeout": 500}},
}


@pytest.mark.parametrize("delivery", sorted(DELIVERIES))
def test_analytics_js_in_chromium_lands_every_call_once_and_resolves_identity(
    web_settings: Settings, page_server: PageServer, tmp_path: Path, delivery: str
) -> None:
    settings = web_settings
    user_id = f"browser-user-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[str, str, int]] = []
    with (
        ThreadedServer(recording(create_app(settings), seen), free_port()) as collector,
        Worker(settings, tmp_path / "worker.log") as worker,
    ):
        config = {
            "writeKey": WEB_KEY,
            "apiHost": f"{collector.url.removeprefix('http://')}/v1",
            "delivery": DELIVERIES[delivery],
            "retry": True,
            "userId": user_id,
            "wrongKey": OTHER_KEY,
        }
        report = run_page(page_server, "127.0.0.1", config)
        ids = report["ids"]
        assert set(ids) == {"page", "identify", "track"} and all(ids.values()), report
        # CORS lets the page read the collector's answers, refusals included.
        assert report["blocked"] is False and report["probeStatus"] == 200, report
        assert report["wrongKeyStatus"] == 403 and report["wrongKeyBody"]["code"] == "origin_not_allowed"
        sent = {*ids.values(), f"probe-{user_id}"}
        posts = sorted((path, status) for method, path, status in seen if method == "POST")
        if delivery == "batching":
            assert posts == [("/v1/b", 200), ("/v1/t", 200), ("/v1/t", 403)], seen
        else:
            assert posts == [("/v1/i", 200), ("/v1/p", 200), ("/v1/t", 200), ("/v1/t", 200), ("/v1/t", 403)]
        assert ("OPTIONS", "/v1/t", 204) in seen

        wait_for(
            lambda: sorted(topic_message_ids(settings, settings.channel_topic("web"))) == sorted(sent),
            60,
            "every call on events.web",
            worker.text,
        )
        client = clickhouse_client(settings, settings.clickhouse_database)
        quoted = ", ".join(f"'{m}'" for m in ids.values())

        def landed() -> list[tuple[Any, ...]]:
            return client.execute(
                f"SELECT message_id, count() FROM events_dedup WHERE message_id IN ({quoted}) "
                "GROUP BY message_id"
            )

        def persons() -> list[tuple[Any, ...]]:
            return client.execute(
                f"SELECT DISTINCT person_id FROM events_by_person WHERE message_id IN ({quoted})"
            )

        def identities() -> dict[str, str]:
            anonymous = f"anonymous_id:{report['anonymousId']}"
            rows = client.execute(
                "SELECT identifier, person_id FROM identities_current WHERE identifier IN "
                f"('{anonymous}', 'customer_id:{user_id}')"
            )
            return {str(k): str(v) for k, v in rows}

        wait_for(lambda: len(landed()) == 3, 60, "the three calls in events_dedup", worker.text)
        wait_for(
            lambda: (
                len(client.execute(f"SELECT message_id FROM events_by_person WHERE message_id IN ({quoted})"))
                == 3
                and len(persons()) == 1
                and len(identities()) == 2
            ),
            60,
            "the three calls resolved to one person",
            worker.text,
        )

    # Exactly once: each call is one record on the topic and one row in events_dedup.
    on_topic = topic_message_ids(settings, settings.channel_topic("web"))
    assert sorted(on_topic) == sorted(sent)
    assert sorted(landed()) == sorted((m, 1) for m in ids.values())
    rows = client.execute(
        "SELECT message_id, type, anonymous_id, user_id, source FROM events_dedup "
        f"WHERE message_id IN ({quoted})"
    )
    by_type = {row[1]: row for row in rows}
    assert set(by_type) == {"page", "identify", "track"}
    assert all(row[2] == report["anonymousId"] and row[4] == "shop-web" for row in rows)
    assert by_type["identify"][3] == user_id and by_type["track"][3] == user_id
    (person,) = persons()
    assert set(identities().values()) == {person[0]}


def test_a_page_of_an_origin_no_source_allows_delivers_nothing(
    web_settings: Settings, page_server: PageServer
) -> None:
    settings = web_settings
    seen: list[tuple[str, str, int]] = []
    with ThreadedServer(recording(create_app(settings), seen), free_port()) as collector:
        config = {
            "writeKey": WEB_KEY,
            "apiHost": f"{collector.url.removeprefix('http://')}/v1",
            "delivery": None,
            "retry": False,  # one attempt per call, so the report comes after every attempt ended
            "userId": "blocked-user",
            "wrongKey": None,
        }
        # The same page server, another origin: http://localhost:PORT is not http://127.0.0.1:PORT.
        report = run_page(page_server, "localhost", config)
        assert set(report["ids"]) == {"page", "identify", "track"}
        assert report["blocked"] is True, report  # the browser refused the direct call too
        # The collector refused every preflight; no call followed.
        assert seen and all(method == "OPTIONS" and status == 403 for method, _, status in seen), seen
        # The collector answers only after the broker acknowledged, and every attempt has ended: nothing
        # reached the topic.
        assert topic_message_ids(settings, settings.channel_topic("web")) == []
