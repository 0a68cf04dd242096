"""No personal data in the logs at the default level: ``omniseg collector serve`` and ``omniseg api
serve``, run as the CLI runs them (their own uvicorn log configuration), get calls that carry a
recognisable email and phone, valid and invalid, with the broker and ClickHouse up and with them
unreachable; neither value, nor the client's address, shows in anything the two processes print."""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.dev.process import ManagedProcess, free_port
from streams.settings import Settings

pytestmark = pytest.mark.integration

EMAIL = "Marta.Privacy-Probe@Shop.Example"
PHONE = "+44 7700 900461"
NEEDLES = ("marta", "privacy-probe", "7700", "900461", "900 461")
WRITE_KEY = "wk_logs_web_0001"
TOKEN = "logs-test-token-0001"
ROOT = Path(__file__).resolve().parents[3]


def _serve(name: str, argv: list[str], env: dict[str, str], port: int, state: Path) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-m", "streams.cli", *argv, "--port", str(port)],
        state,
        [port],
        lambda: _answers(f"http://127.0.0.1:{port}/health"),
        cwd=ROOT,
        env=env,
    )


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNISEG_")}
    env.update(
        OMNISEG_ENV_FILE="/nonexistent/omniseg.env",
        OMNISEG_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        OMNISEG_TOPIC_PREFIX=settings.topic_prefix,
        OMNISEG_CLICKHOUSE_HOST=settings.clickhouse_host,
        OMNISEG_CLICKHOUSE_PORT=str(settings.clickhouse_port),
        OMNISEG_CLICKHOUSE_DATABASE=settings.clickhouse_database,
        OMNISEG_SOURCES=orjson.dumps({WRITE_KEY: {"name": "shop-web", "channel": "web"}}).decode(),
        OMNISEG_API_TOKENS=TOKEN,
        OMNISEG_PRODUCE_TIMEOUT_S="2",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def _drive_collector(base: str) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    traits = {"email": EMAIL, "phone": PHONE}
    calls = [
        ("/v1/identify", {"type": "identify", "userId": "u-logs-1", "traits": traits}),
        ("/v1/track", {"event": "Order Completed", "userId": EMAIL, "properties": {"phone": PHONE}}),
        ("/v1/track", {"userId": EMAIL, "properties": {"phone": PHONE}}),  # no event name: 400
        ("/v1/batch", {"batch": [{"type": "identify", "traits": traits}, {"type": "nope", "userId": PHONE}]}),
    ]
    for path, body in calls:
        _call(base + path, orjson.dumps(body), {**auth, "Content-Type": "application/json"})
    _call(base + "/v1/track", f'{{"userId": "{EMAIL}", '.encode(), auth)  # broken JSON: 400
    _call(base + "/v1/track", orjson.dumps({"writeKey": EMAIL, "userId": PHONE}))  # unknown key: 401


def _drive_api(base: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for query in (f"identifier={EMAIL}", f"identifier={PHONE}&kind=phone", f"identifier=email:{EMAIL}"):
        _call(f"{base}/v1/persons/lookup?{query.replace(' ', '%20').replace('+', '%2B')}", None, bearer)
    _call(f"{base}/v1/persons/lookup?identifier=not-an-email@&kind=email", None, bearer)
    _call(f"{base}/v1/persons/lookup?identifier={EMAIL}", None, {"Authorization": f"Bearer {EMAIL}"})


@pytest.mark.parametrize("reachable", [True, False], ids=["backends-up", "backends-down"])
def test_collector_and_api_print_no_email_or_phone_at_the_default_level(
    settings_factory: Callable[..., Settings], tmp_path: Path, reachable: bool
) -> None:
    settings = settings_factory()
    extra = {} if reachable else {
        "OMNISEG_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "OMNISEG_CLICKHOUSE_PORT": str(free_port()),
    }  # fmt: skip
    env = _environment(settings, **extra)
    collector_port, api_port = free_port(), free_port()
    collector = _serve("collector", ["collector", "serve"], env, collector_port, tmp_path)
    api = _serve("api", ["api", "serve"], env, api_port, tmp_path)
    try:
        collector.start(timeout_s=60)
        api.start(timeout_s=60)
        _drive_collector(f"http://127.0.0.1:{collector_port}")
        _drive_api(f"http://127.0.0.1:{api_port}")
    finally:
        collector.stop()
        api.stop()
    printed = collector.log_file.read_text(errors="replace") + api.log_file.read_text(errors="replace")
    assert "Uvicorn running" in printed or "Application startup complete" in printed, printed[-2000:]
    if not reachable:  # the warnings of the failure paths are in what is checked
        assert "collector answered 503" in printed and "ClickHouse unavailable" in printed, printed[-3000:]
    for needle in NEEDLES:
        assert needle not in printed.lower(), f"{needle!r} in the logs:\n{printed[-3000:]}"
