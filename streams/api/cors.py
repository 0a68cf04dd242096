"""CORS for the collector, so browser SDKs (analytics.js) on other origins can send.

Browsers preflight every analytics.js call (it sends ``Authorization`` and ``Content-Type: text/plain``
cross-origin). A preflight carries no write key, so it is answered for an origin that ANY source
allows; the call itself is then accepted only when the source of the key it carries allows its origin
(:func:`check_origin`, a 403 otherwise). Every response to an origin some source allows carries
``Access-Control-Allow-Origin``, errors included, so the page can read a 400, 401 or 403.

Requests without an ``Origin`` header (servers, apps, curl) pass through untouched; the cost on that
path is one scan of the request's header list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from streams.api.intake import CollectorError
from streams.settings import Source

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOWED_METHODS = "POST, OPTIONS"
# What analytics.js and the other Segment SDKs send; X-Retry-Count is analytics.js's retry counter.
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Retry-Count"
# Seconds a browser may reuse a preflight answer; browsers cap it (Chromium at 7200).
MAX_AGE_S = 86400


class CorsPolicy:
    """The origins the configured sources allow, for preflights and response headers."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self.origins = frozenset(origin for source in sources for origin in source.allowed_origins)
        self.any_origin = "*" in self.origins

    def allows(self, origin: str) -> bool:
        """Whether some source allows browser calls from ``origin``."""
        return self.any_origin or origin in self.origins


def check_origin(source: Source, origin: str | None) -> None:
    """Refuse (403) a browser call whose page's origin the source of its write key does not allow."""
    if origin is None or source.allows_origin(origin.lower()):
        return
    raise CollectorError(
        403,
        "origin_not_allowed",
        f"origin {origin!r} may not send with the write key of source {source.name!r}; "
        "add it to that source's allowed_origins",
    )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class CorsMiddleware:
    """ASGI middleware: answers preflights and adds the CORS headers to responses for allowed origins."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_origin = _header(scope, b"origin")
        if raw_origin is None:
            await self.app(scope, receive, send)
            return
        origin = raw_origin.decode("latin-1")
        allowed = self.policy.allows(origin.lower())
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await self._preflight(origin, allowed, send)
            return
        if not allowed:
            # No CORS headers: the browser keeps the answer from the page. The endpoint refuses the
            # call itself (403), since a simple request reaches it without a preflight.
            await self.app(scope, receive, send)
            return
        cors_headers = [
            (b"access-control-allow-origin", raw_origin),
            (b"access-control-expose-headers", b"Retry-After"),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors_headers]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, allowed: bool, send: Send) -> None:
        if allowed:
            status = 204
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                (b"access-control-max-age", str(MAX_AGE_S).encode()),
                (b"vary", b"Origin"),
                (b"content-length", b"0"),
            ]
            body = b""
        else:
            status = 403
            body = orjson.dumps(
                {
                    "success": False,
                    "code": "origin_not_allowed",
                    "message": f"origin {origin!r} is in no source's allowed_origins",
                }
            )
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
