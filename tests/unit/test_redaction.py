"""What log lines may show instead of personal data (streams/redaction.py)."""

from __future__ import annotations

import logging

import pytest

from streams.redaction import (
    AccessLogRedaction,
    client_network,
    fingerprint,
    redact,
    redact_access_logs,
    redact_identifier,
    without_query,
)


def test_fingerprint_is_stable_in_a_process_and_hides_the_value() -> None:
    assert fingerprint("ann@shop.com") == fingerprint(b"ann@shop.com")
    assert fingerprint("ann@shop.com") != fingerprint("bob@shop.com")
    assert "ann" not in redact("ann@shop.com", "email") and redact("ann@shop.com", "email").startswith(
        "email#"
    )


def test_identifier_keys_keep_their_kind_only() -> None:
    shown = redact_identifier(b"email:ann@shop.com")
    assert shown.startswith("email#") and "ann" not in shown and "shop" not in shown
    assert redact_identifier("no kind here").startswith("identifier#")
    assert redact_identifier("weird kind!:x").startswith("identifier#")


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77:51234", "203.0.113.0"),
        ("203.0.113.77", "203.0.113.0"),
        ("[2001:db8:85a3:1::7]:443", "2001:db8:85a3::"),
        ("2001:db8:85a3:1::7:443", "2001:db8:85a3::"),
        ("testclient:50000", "-"),
    ],
)
def test_client_address_is_cut_to_its_network(address: str, network: str) -> None:
    assert client_network(address) == network


def test_query_strings_are_left_out() -> None:
    assert without_query("/v1/persons/lookup?identifier=ann@shop.com") == "/v1/persons/lookup?…"
    assert without_query("/v1/track") == "/v1/track"


def test_access_log_filter_rewrites_uvicorns_record(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction.access")
    logger.addFilter(AccessLogRedaction())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "198.51.100.23:40000",
            "GET",
            "/v1/persons/lookup?identifier=ann%40shop.com&kind=email",
            "1.1",
            200,
        )
    text = caplog.text
    assert "ann" not in text and "198.51.100.23" not in text
    assert '198.51.100.0 - "GET /v1/persons/lookup?… HTTP/1.1" 200' in text


def test_redact_access_logs_installs_one_filter() -> None:
    name = "test.redaction.install"
    redact_access_logs(name)
    redact_access_logs(name)
    assert sum(isinstance(f, AccessLogRedaction) for f in logging.getLogger(name).filters) == 1
