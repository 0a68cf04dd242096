"""docker-compose.yml: the collector and the API are reachable only through the TLS proxy, and each
service gets only the secrets it needs (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "tls" / "omniseg.conf.template"
SECRETS = ("OMNISEG_SOURCES", "OMNISEG_CLICKHOUSE_PASSWORD", "OMNISEG_API_TOKENS")
# Which service may hold which secret; every other service must not.
ALLOWED = {
    "OMNISEG_SOURCES": {"collector"},
    "OMNISEG_CLICKHOUSE_PASSWORD": {"init", "worker", "api"},
    "OMNISEG_API_TOKENS": {"api"},
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(compose["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def test_only_the_proxy_is_published_beyond_this_host(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "proxy":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "ports" not in services["collector"] and "ports" not in services["api"]
    assert sorted(str(p) for p in services["proxy"]["ports"]) == ["443:443", "80:80"]


def test_proxy_reaches_the_collector_and_the_api_but_not_kafka_or_clickhouse(
    services: dict[str, Any],
) -> None:
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    env = _env(proxy)
    collector_port = _env(services["collector"])["OMNISEG_COLLECTOR_PORT"]
    api_port = _env(services["api"])["OMNISEG_API_PORT"]
    assert env["PROXY_COLLECTOR_UPSTREAM"] == f"collector:{collector_port}"
    assert env["PROXY_API_UPSTREAM"] == f"api:{api_port}"
    assert proxy["networks"] == ["edge"]
    on_edge = {name for name, s in services.items() if "edge" in (s.get("networks") or [])}
    assert on_edge == {"proxy", "collector", "api"}
    mounts = {str(v).split(":")[1]: ROOT / str(v).split(":")[0] for v in proxy["volumes"]}
    assert mounts["/etc/nginx/templates/default.conf.template"].resolve() == TEMPLATE


def test_each_service_gets_only_its_secrets(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("env_file") in (None, "deploy/omniseg.env"), f"{name} reads {service['env_file']}"
        for secret in SECRETS:
            if secret in _env(service):
                assert name in ALLOWED[secret], f"{name} gets {secret}"
    for secret, names in ALLOWED.items():
        for name in names:
            assert secret in _env(services[name]), f"{name} lacks {secret}"
    shared = (ROOT / "deploy" / "omniseg.env").read_text()
    assert not any(secret in shared for secret in SECRETS)


def test_template_variables_are_all_set_by_compose(services: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{(PROXY_[A-Z_]+)\}", TEMPLATE.read_text()))
    assert used and used <= set(_env(services["proxy"]))


def test_template_redirects_http_sends_hsts_and_logs_no_query_string() -> None:
    text = TEMPLATE.read_text()
    assert "return 308 https://$host$request_uri;" in text
    assert text.count('add_header Strict-Transport-Security "max-age=63072000" always;') == 2
    log_format = re.search(r"log_format omniseg_private (.*?);", text, re.S)
    assert log_format is not None
    for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$http_referer",
                  "$http_user_agent", "$remote_addr"):  # fmt: skip
        assert leaky not in log_format.group(1), leaky
    assert text.count("access_log ${PROXY_ACCESS_LOG} omniseg_private;") == text.count("server {")
