"""Personal data kept out of log lines: what a log call may show instead of an identifier, an email, a
phone, an address or a record's bytes.

At INFO and above, omniseg logs counts, ids it made itself (stages, topics, destinations, offsets) and
reasons, never what a person sent. When a line must tell two values apart, it shows the value's kind and
a :func:`fingerprint`: a keyed hash with a key made fresh in each process, so one process's lines can be
matched with each other, but a fingerprint never gives the value back, not even for a guessed email.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets

# Fresh in every process: a fingerprint cannot be checked against a list of known emails.
_KEY = secrets.token_bytes(32)
_FINGERPRINT_HEX = 10


def fingerprint(value: str | bytes) -> str:
    """A short keyed hash of ``value``: the same within this process for the same value, and no way
    back to the value."""
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return hmac.new(_KEY, data, hashlib.sha256).hexdigest()[:_FINGERPRINT_HEX]


def redact(value: str | bytes | None, kind: str = "value") -> str:
    """``value`` as a log line may show it: ``<kind>#<fingerprint>``, e.g. ``email#3f2a1b9c0d``."""
    if value is None:
        return f"{kind}#none"
    return f"{kind}#{fingerprint(value)}"


def redact_identifier(key: str | bytes) -> str:
    """An identifier key ``kind:value`` (how the identity topics key them) as ``kind#<fingerprint>``;
    a key without a kind shows as ``identifier#<fingerprint>``."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    kind, sep, _ = text.partition(":")
    plain_kind = sep and kind.isascii() and kind.replace("_", "").isalnum() and len(kind) <= 32
    return redact(key, kind if plain_kind else "identifier")


def without_query(target: str) -> str:
    """A request target with its query string left out (``/v1/persons/lookup?identifier=...`` ->
    ``/v1/persons/lookup?…``)."""
    path, sep, _ = target.partition("?")
    return f"{path}?…" if sep else path


def client_network(address: str) -> str:
    """The network of a client address (an IPv4 /24, an IPv6 /48), port left out: enough to tell
    traffic apart, not enough to name a household. ``-`` for anything that is not an address."""
    host = address
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:  # v4:port
        host = host.partition(":")[0]
    # uvicorn writes v6:port without brackets; the port then lands in the bits the prefix drops.
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "-"
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class AccessLogRedaction(logging.Filter):
    """For uvicorn's access logger (``uvicorn.access``): each line keeps the method, path and status,
    but the query string and the client's address are cut (a person lookup carries an email in its
    query). uvicorn's record arguments are ``(client_addr, method, full_path, http_version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, target, version, status = args
            record.args = (client_network(str(client)), method, without_query(str(target)), version, status)
        return True


def redact_access_logs(logger_name: str = "uvicorn.access") -> None:
    """Install :class:`AccessLogRedaction` on ``logger_name`` (once, however often it is called)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, AccessLogRedaction) for existing in logger.filters):
        logger.addFilter(AccessLogRedaction())
