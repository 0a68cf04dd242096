"""The TLS proxy of docker-compose.yml (deploy/tls/omniseg.conf.template), run by a real nginx in front
of a real collector and read API: HTTPS reaches each service by host name, HTTP is redirected, the
headers are set, and the access log holds no query string or client address.

nginx comes from Debian (scripts/setup.sh installs nginx-light); the certificate is made by
deploy/tls/self-signed.sh. Every process is stopped by pid, also when a test fails.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.api.collector import create_app
from streams.api.persons import create_persons_app
from streams.api.server import ThreadedServer
from streams.dev.process import ManagedProcess, free_port
from streams.settings import Settings, Source

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "deploy" / "tls" / "omniseg.conf.template"
COLLECTOR_DOMAIN = "collector.omniseg.test"
API_DOMAIN = "api.omniseg.test"
TOKEN = "tls-test-token-0001"
EMAIL = "ann.tls@shop.example"


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image does: each ${PROXY_*} replaced, nginx's own $variables left alone."""
    return re.sub(r"\$\{(PROXY_[A-Z_]+)\}", lambda m: values[m.group(1)], template)


@dataclass
class Proxy:
    http_port: int
    https_port: int
    ca_file: Path
    access_log: Path

    def request(
        self,
        host: str,
        path: str,
        *,
        tls: bool = True,
        headers: dict[str, str] | None = None,
        sni: str | None = None,
    ) -> http.client.HTTPResponse:
        """One request for ``host`` (Host header, and SNI unless ``sni`` is given), to 127.0.0.1."""
        if tls:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            conn: http.client.HTTPConnection = _SniConnection(sni or host, self.https_port, context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response


class _SniConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that sends ``server_hostname`` as SNI and checks the certificate against it."""

    def __init__(self, server_hostname: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, timeout=10, context=context)
        self._server_hostname = server_hostname
        self._tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self._server_hostname)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: run scripts/setup.sh (it installs Debian's nginx-light)")
    state = tmp_path_factory.mktemp("tls-proxy")
    state.chmod(0o755)
    certs = state / "certs"
    subprocess.run(
        [str(ROOT / "deploy/tls/self-signed.sh"), str(certs), COLLECTOR_DOMAIN, API_DOMAIN],
        check=True,
        capture_output=True,
        timeout=60,
    )
    collector_settings = Settings(
        _env_file=None,
        kafka_bootstrap="127.0.0.1:1",
        sources={"wk_tls_web_0001": Source(name="web", channel="web")},
    )
    api_settings = Settings(_env_file=None, api_tokens=TOKEN, destinations_dir=state)

    def no_clickhouse() -> object:
        raise OSError("no ClickHouse here")

    api_app = create_persons_app(api_settings, client_factory=no_clickhouse)  # type: ignore[arg-type]
    http_port, https_port = free_port(), free_port()
    access_log = state / "access.log"
    with (
        ThreadedServer(create_app(collector_settings), free_port()) as collector,
        ThreadedServer(api_app, free_port()) as api,
    ):
        site = render(
            TEMPLATE.read_text(),
            {
                "PROXY_LISTEN_HTTP": f"127.0.0.1:{http_port}",
                "PROXY_LISTEN_HTTPS": f"127.0.0.1:{https_port}",
                "PROXY_COLLECTOR_DOMAIN": COLLECTOR_DOMAIN,
                "PROXY_API_DOMAIN": API_DOMAIN,
                "PROXY_COLLECTOR_UPSTREAM": collector.url.removeprefix("http://"),
                "PROXY_API_UPSTREAM": api.url.removeprefix("http://"),
                "PROXY_CERTIFICATE": str(certs / "fullchain.pem"),
                "PROXY_CERTIFICATE_KEY": str(certs / "privkey.pem"),
                "PROXY_ACCESS_LOG": str(access_log),
            },
        )
        (state / "site.conf").write_text(site)
        temp = state / "temp"
        temp.mkdir(mode=0o777)
        temp.chmod(0o777)
        # The main file the nginx image has around conf.d (its http {} block), with paths under state.
        (state / "nginx.conf").write_text(
            f"pid {state}/nginx.pid;\nerror_log {state}/error.log warn;\nworker_processes 1;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;\n"
            f"  fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;\n"
            f"  include {state}/site.conf;\n"
            "}\n"
        )
        process = ManagedProcess(
            "nginx",
            [
                nginx,
                "-e",
                str(state / "error.log"),
                "-p",
                str(state),
                "-c",
                str(state / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            state,
            [http_port, https_port],
            lambda: _listening(https_port),
        )
        try:
            process.start(timeout_s=30)
            yield Proxy(http_port, https_port, certs / "fullchain.pem", access_log)
        finally:
            process.stop()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def test_https_reaches_the_collector_by_its_host_name(proxy: Proxy) -> None:
    response = proxy.request(COLLECTOR_DOMAIN, "/openapi.json")
    assert response.status == 200
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "nginx/" not in (response.getheader("Server") or "")


def test_https_reaches_the_api_which_still_wants_its_token(proxy: Proxy) -> None:
    assert proxy.request(API_DOMAIN, "/health").status == 200
    lookup = f"/v1/persons/lookup?identifier={EMAIL}"
    assert proxy.request(API_DOMAIN, lookup).status == 401
    authorised = proxy.request(API_DOMAIN, lookup, headers={"Authorization": f"Bearer {TOKEN}"})
    assert authorised.status == 503  # past the token: no ClickHouse in this test
    assert authorised.getheader("Strict-Transport-Security") == "max-age=63072000"
    assert authorised.getheader("Cache-Control") == "no-store"


def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    response = proxy.request(API_DOMAIN, "/v1/persons/lookup?kind=email", tls=False)
    assert response.status == 308
    assert response.getheader("Location") == f"https://{API_DOMAIN}/v1/persons/lookup?kind=email"


def test_an_unknown_host_name_is_refused(proxy: Proxy) -> None:
    # The certificate is the API's (SNI), the Host header names no service of this proxy.
    assert proxy.request("other.omniseg.test", "/health", sni=API_DOMAIN).status == 421


def test_access_log_has_no_query_string_and_no_client_address(proxy: Proxy) -> None:
    proxy.request(
        API_DOMAIN, f"/v1/persons/lookup?identifier={EMAIL}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    proxy.request(API_DOMAIN, f"/v1/persons/lookup?identifier={EMAIL}", tls=False)
    text = proxy.access_log.read_text()
    assert "/v1/persons/lookup" in text
    assert "ann.tls" not in text and "identifier" not in text
    assert "127.0.0.1" not in text and "127.0.0.0" in text
