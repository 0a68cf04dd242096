"""The Segment-compatible HTTP collector: ``/v1/track|identify|page|screen|alias|group|batch|import``.

analytics.js (``@segment/analytics-next``) posts to the short paths ``{apiHost}/t|p|i|s|a|g`` and, when
batching, ``/b``, as ``text/plain`` JSON; they are served under ``/v1/`` and at the root, so ``apiHost``
may end in ``/v1`` or not. Browsers reach the collector through CORS (:mod:`streams.api.cors`), for
the origins listed in each source's ``allowed_origins``.

A request is answered 200 only after the broker acknowledged every record it produced (valid calls on
the source's channel topic, invalid batch items on ``events.invalid``). A single call that fails
validation is answered 400 naming the field, after its record is on ``events.invalid`` (400 even when
that fails: a retry could not succeed); so is a request refused whole with 400 (bad JSON, too deep, too
many calls, a corrupt gzip body) when its write key is known. When the broker fails or is slower than
``produce_timeout_s`` the answer is 503, which Segment clients retry. A retry can repeat records that
did land: downstream stages deduplicate by ``messageId``.

Write keys are public in browsers, so what one request or key can cost is bounded: nesting depth,
calls per batch and the batch answer's size are capped, and each write key gets
``collector_rate_limit_per_s`` calls a second (a batch counts its calls, a whole refusal counts one),
beyond which the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from streams.api.cors import CorsMiddleware, CorsPolicy, check_origin
from streams.api.intake import CollectorError, Intake, Sender, parse_json, write_key_from_header
from streams.api.models import BatchRequest, CollectorAccepted, ErrorBody, Health, SegmentCall
from streams.api.producer import AsyncProducer, OutRecord, ProduceError
from streams.api.rate_limit import RateLimiter
from streams.domain.events import EVENT_TYPES
from streams.privacy.suppressions import SuppressionList
from streams.redaction import redact_access_logs
from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)

_JSON = "application/json"
_RETRY_AFTER_S = "1"
_ACCEPTED_ONE = orjson.dumps(
    {"success": True, "accepted": 1, "rejected": 0, "errors": [], "errors_omitted": 0}
)
# analytics.js's short paths: the call type's first letter (plugins/segmentio), and /b for a batch.
SHORT_PATHS = {"t": "track", "p": "page", "i": "identify", "s": "screen", "a": "alias", "g": "group"}
BATCH_SHORT_PATH = "b"


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=_JSON, headers=headers)


def _error(exc: CollectorError) -> Response:
    headers = None
    if exc.retry_after_s is not None:
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif exc.status == 503:
        headers = {"Retry-After": _RETRY_AFTER_S}
    return _json(exc.status, exc.body(), headers)


def _too_large(what: str, size: int | str, limit: int) -> CollectorError:
    return CollectorError(
        413, "payload_too_large", f"the {what} is {size} bytes, over the limit of {limit} bytes"
    )


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body as sent (compressed, if it is), refusing more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_len = int(declared)
        except ValueError:
            raise CollectorError(400, "invalid_request", f"bad Content-Length header {declared!r}") from None
        if declared_len > limit:
            raise _too_large(what, declared_len, limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(what, f"more than {limit}", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(request: Request, body: bytes, limit: int, what: str) -> bytes:
    """``body`` decompressed per its Content-Encoding, refusing more than ``limit`` bytes after decoding
    and a compressed stream that is cut short or followed by anything."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise CollectorError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip or none"
        )
    if not body:
        return body
    # wbits 47 accepts gzip and zlib headers; max_length bounds memory against decompression bombs.
    inflater = zlib.decompressobj(47)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise CollectorError(400, "invalid_request", f"the {encoding} body is corrupt: {exc}") from None
    if len(plain) > limit:
        raise _too_large(f"decompressed {what}", f"more than {limit}", limit)
    # Only a stream that ended, with nothing after it, is the whole body the client meant to send.
    if not inflater.eof:
        raise CollectorError(
            400, "invalid_request", f"the {encoding} body is truncated: its stream never ends"
        )
    if inflater.unused_data:
        raise CollectorError(
            400,
            "invalid_request",
            f"the {encoding} body has {len(inflater.unused_data)} bytes after the end of its stream",
        )
    return plain


def _docs(body_model: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{body_model}"}}},
            }
        },
        "responses": {
            200: {"model": CollectorAccepted, "description": "Every record acknowledged by the broker."},
            400: {
                "model": ErrorBody,
                "description": "Malformed JSON, an invalid call (names the field), nested too deep, "
                "or too many calls in a batch.",
            },
            401: {"model": ErrorBody, "description": "Missing or unknown write key."},
            413: {"model": ErrorBody, "description": "Over the per-event or per-batch size limit."},
            429: {
                "model": ErrorBody,
                "description": "Over the write key's rate limit; retry after `Retry-After` seconds.",
            },
            503: {"model": ErrorBody, "description": "The broker did not acknowledge in time; retry."},
        },
    }


def create_app(settings: Settings) -> FastAPI:
    """The collector app; the Kafka producer starts with the app's lifespan and is flushed on shutdown."""
    intake = Intake(settings)
    redact_access_logs()  # in case a deployment turns uvicorn's access log on
    needed_topics = sorted(
        {settings.channel_topic(source.channel) for source in settings.sources.values()}
        | {intake.invalid_topic}
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = AsyncProducer(settings)
        producer.start()
        app.state.producer = producer
        suppressions = intake.suppressions = SuppressionList(settings)
        suppressions.follow()
        try:
            yield
        finally:
            app.state.producer = None
            intake.suppressions = None
            await anyio.to_thread.run_sync(suppressions.close)
            await anyio.to_thread.run_sync(producer.close)

    app = FastAPI(
        title="omniseg collector",
        version="1",
        description=(
            "Segment-compatible HTTP tracking API. Authenticate with HTTP Basic auth, the source's "
            "write key as username and an empty password (or `writeKey` in the body). A 200 means "
            "every record is stored on Kafka; retry on 5xx. analytics.js's short paths (`/v1/t`, `/p`, "
            "`/i`, `/s`, `/a`, `/g`, `/b`, also without `/v1`) are the same endpoints. Browsers may "
            "call from the origins in the source's `allowed_origins` (CORS); others get 403."
        ),
        lifespan=lifespan,
    )
    app.state.producer = None

    async def send(request: Request, records: list[OutRecord]) -> None:
        producer: AsyncProducer | None = request.app.state.producer
        if producer is None:
            raise CollectorError(503, "unavailable", "the collector's Kafka producer is not running")
        try:
            await producer.send_all(records)
        except ProduceError as exc:
            log.warning("collector answered 503: %s", exc)
            raise CollectorError(503, "unavailable", f"{exc}; nothing is confirmed, retry") from None

    rate = settings.collector_rate_limit_per_s
    # Bursts of twice the rate (at least one call, for rates below one a second).
    limiter = RateLimiter(rate, burst=max(2 * rate, 1.0)) if rate > 0 else None

    def admit(sender: Sender, calls: int) -> None:
        """Count ``calls`` against the sender's write key, or refuse (429) when it is over its rate."""
        if limiter is None:
            return
        wait_s = limiter.take(sender.write_key, max(calls, 1))
        if wait_s > 0:
            retry_after_s = math.ceil(wait_s)
            raise CollectorError(
                429,
                "rate_limited",
                f"over the rate limit of {rate:g} calls per second for this write key; "
                f"retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )

    async def refuse(
        request: Request, exc: CollectorError, sender: Sender | None, body: bytes, received_at: datetime
    ) -> Response:
        """The error answer, after keeping what was refused on events.invalid: the refused call the
        error carries or, for a request refused whole with 400 by a known sender, the body itself
        (counted against the sender's rate limit like a call, so refusals cost what calls cost)."""
        kept = exc.kept
        if kept is None and exc.status == 400 and sender is not None:
            try:
                admit(sender, 1)
            except CollectorError as limited:
                return _error(limited)
            kept = intake.refused_request(body, exc, sender.source, received_at)
        if kept is not None:
            try:
                await send(request, [kept])
            except CollectorError as unavailable:
                log.warning("a refused request is not kept on events.invalid: %s", unavailable.message)
        return _error(exc)

    def single_endpoint(call_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            received_at = datetime.now(UTC)
            sender: Sender | None = None
            body = b""
            try:
                header_key = write_key_from_header(request.headers.get("authorization"))
                origin = request.headers.get("origin")
                if header_key:
                    sender = intake.authenticate(header_key, None)
                    check_origin(sender.source, origin)
                body = await read_body(request, settings.max_event_bytes, "event")
                # Rebound only when decoding succeeds: a refusal then keeps the body as received.
                body = decode_body(request, body, settings.max_event_bytes, "event")
                data = parse_json(body, settings.max_event_depth)
                if sender is None:
                    sender = intake.authenticate(None, data)
                    check_origin(sender.source, origin)
                admit(sender, 1)
                record = intake.single(data, call_type, sender.source, received_at)
                if record is not None:
                    await send(request, [record])
            except CollectorError as exc:
                return await refuse(request, exc, sender, body, received_at)
            return Response(_ACCEPTED_ONE, media_type=_JSON)

        endpoint.__name__ = call_type
        return endpoint

    async def batch(request: Request) -> Response:
        received_at = datetime.now(UTC)
        sender: Sender | None = None
        body = b""
        try:
            header_key = write_key_from_header(request.headers.get("authorization"))
            origin = request.headers.get("origin")
            if header_key:
                sender = intake.authenticate(header_key, None)
                check_origin(sender.source, origin)
            body = await read_body(request, settings.max_batch_bytes, "batch")
            body = decode_body(request, body, settings.max_batch_bytes, "batch")
            data = parse_json(body, settings.max_event_depth)
            if sender is None:
                sender = intake.authenticate(None, data)
                check_origin(sender.source, origin)
            admit(sender, len(intake.batch_items(data)))
            outcome = intake.batch(data, sender.source, received_at, len(body))
            await send(request, outcome.records)
        except CollectorError as exc:
            return await refuse(request, exc, sender, body, received_at)
        return _json(200, outcome.answer())

    for call_type in EVENT_TYPES:
        app.add_api_route(
            f"/v1/{call_type}",
            single_endpoint(call_type),
            methods=["POST"],
            tags=["tracking"],
            **_docs(
                "SegmentCall",
                f"Send one {call_type} call",
                f"One Segment `{call_type}` call, at most {settings.max_event_bytes} bytes and "
                f"{settings.max_event_depth} levels deep.",
            ),
        )
    for path in ("/v1/batch", "/v1/import"):
        app.add_api_route(
            path,
            batch,
            methods=["POST"],
            tags=["tracking"],
            name=path.rsplit("/", 1)[-1],
            **_docs(
                "BatchRequest",
                "Send a batch of calls",
                f"Up to {settings.max_batch_bytes} bytes and {settings.max_batch_items} calls, each at most "
                f"{settings.max_event_bytes} bytes and {settings.max_event_depth} levels deep. Invalid calls "
                "go to events.invalid with their reason and the first 100 are listed in `errors`; the "
                "valid ones are stored. `/v1/import` is the same endpoint (Segment's alias).",
            ),
        )

    for letter, call_type in SHORT_PATHS.items():
        for path in (f"/v1/{letter}", f"/{letter}"):
            app.add_api_route(
                path,
                single_endpoint(call_type),
                methods=["POST"],
                name=f"{call_type}_short_{path.count('/')}",
                include_in_schema=False,
            )
    for path in (f"/v1/{BATCH_SHORT_PATH}", f"/{BATCH_SHORT_PATH}"):
        app.add_api_route(
            path, batch, methods=["POST"], name=f"batch_short_{path.count('/')}", include_in_schema=False
        )
    app.add_middleware(CorsMiddleware, policy=CorsPolicy(settings.sources.values()))

    @app.get("/health", response_model=Health, responses={503: {"model": Health}}, tags=["operations"])
    async def health(request: Request) -> Response:
        """Liveness: 200 while the collector can serve (its producer runs and is polled); restart it
        on 503. Whether the broker takes records now is ``/ready``."""
        producer: AsyncProducer | None = request.app.state.producer
        if producer is None or not producer.alive:
            return _json(503, {"status": "unavailable", "message": "the Kafka producer is not running"})
        dropped = intake.suppressions.dropped if intake.suppressions is not None else 0
        return _json(200, {"status": "ok", "replacements": producer.replacements, "suppressed": dropped})

    @app.get("/ready", response_model=Health, responses={503: {"model": Health}}, tags=["operations"])
    async def ready(request: Request) -> Response:
        """Readiness: 200 when the broker answers, the producer delivers and every topic the collector
        writes to exists; 503 (send no traffic here) otherwise, with the reason."""
        producer: AsyncProducer | None = request.app.state.producer
        if producer is None:
            return _json(503, {"status": "unavailable", "message": "the Kafka producer is not running"})
        state = await producer.readiness()
        if not state.ready:
            return _json(503, {"status": "unavailable", "message": state.reason})
        missing = [topic for topic in needed_topics if topic not in state.topics]
        if missing:
            return _json(
                503,
                {
                    "status": "unavailable",
                    "brokers": state.brokers,
                    "missing_topics": missing,
                    "message": "topics are missing; run `omniseg dev up` or create them",
                },
            )
        return _json(200, {"status": "ok", "brokers": state.brokers, "missing_topics": []})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(SegmentCall, "validation"), (BatchRequest, "validation")],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs["$defs"])
        components["securitySchemes"] = {
            "writeKey": {
                "type": "http",
                "scheme": "basic",
                "description": "Username: the source's write key. Password: empty.",
            }
        }
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"writeKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The collector for the process-wide settings (uvicorn factory of ``omniseg collector serve``)."""
    return create_app(get_settings())
