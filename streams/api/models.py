"""Request and response shapes of the collector, for its OpenAPI document.

The handlers parse bodies with orjson and validate with ``Event.from_segment`` (the one source of truth);
these models only describe the wire format to readers of ``/docs``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from streams.domain.events import Identifiers, Line

CallType = Literal["track", "identify", "page", "screen", "alias", "group"]

_TRACK_EXAMPLE: dict[str, Any] = {
    "type": "track",
    "messageId": "0b8f7f6e-1c1f-4b8e-9d3a-6c2f0e6a9b11",
    "userId": "user-42",
    "anonymousId": "5f3c1d2e-anon",
    "event": "Order Completed",
    "properties": {
        "order_id": "A-1001",
        "currency": "EUR",
        "products": [{"sku": "SKU-1", "price": 19.99, "quantity": 1}],
    },
    "context": {"ip": "203.0.113.7", "page": {"url": "https://shop.example/checkout"}},
    "timestamp": "2024-05-01T12:00:00.000Z",
}


class SegmentCall(BaseModel):
    """One Segment-spec call (https://segment.com/docs/connections/spec/). Unknown fields are ignored.

    The write key decides ``context.channel`` and ``context.source``. Every call needs ``userId`` or
    ``anonymousId`` (or one of ``identifiers``); ``track`` needs ``event``; ``alias`` needs ``previousId``
    and ``userId``; ``group`` needs ``groupId``. A missing ``messageId`` gets a generated one.
    """

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"examples": [cast(JsonValue, _TRACK_EXAMPLE)]}
    )

    type: CallType | None = Field(
        default=None, description="Required inside a batch; implied by the path on /v1/<type>."
    )
    messageId: str | None = Field(default=None, max_length=256, description="Unique id; used for dedup.")
    userId: str | None = Field(
        default=None, max_length=256, description="A number is kept as its exact decimal text."
    )
    anonymousId: str | None = Field(default=None, max_length=256)
    event: str | None = Field(default=None, description="track: the event name.")
    name: str | None = Field(default=None, description="page / screen: the page or screen name.")
    previousId: str | None = Field(default=None, description="alias: the previous id.")
    groupId: str | None = Field(default=None, description="group: the account or group id.")
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = Field(
        default=None, description="Segment context (ip, userAgent, page, device, campaign, library, ...)."
    )
    integrations: dict[str, Any] | None = None
    timestamp: datetime | None = Field(
        default=None,
        description="When it happened, on the client's clock; defaults to receipt. Corrected for the "
        "client's clock skew (receivedAt - (sentAt - timestamp)) when sentAt is more than a second off "
        "the collector's clock; refused when more than 24 hours after receipt or before 1970.",
    )
    originalTimestamp: datetime | None = Field(
        default=None, description="Read as timestamp when timestamp is missing (Segment exports)."
    )
    sentAt: datetime | None = Field(default=None, description="When the client sent the call.")
    identifiers: Identifiers | None = Field(
        default=None,
        description="omniseg extension: channel identifiers (email, phone, loyaltyCard, ...). "
        "email and phone also come from traits or context.traits; a call whose traits name another "
        "email or phone than identifiers is refused.",
    )
    lines: list[Line] | None = Field(
        default=None,
        description="omniseg extension: product lines. Without it, lines come from properties.products.",
    )
    writeKey: str | None = Field(default=None, description="Alternative to HTTP Basic auth.")


class BatchRequest(BaseModel):
    """Up to ``max_batch_bytes`` (500 KB) and ``max_batch_items`` (2,500) calls; each call at most
    ``max_event_bytes`` (32 KB) and ``max_event_depth`` (64) levels of nesting."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentCall]
    context: dict[str, Any] | None = Field(
        default=None, description="Merged into every call's context (the call's own keys win)."
    )
    sentAt: datetime | None = None
    writeKey: str | None = Field(default=None, description="Alternative to HTTP Basic auth.")


class RejectedCall(BaseModel):
    index: int = Field(description="Position in the batch.")
    field: str | None = Field(description="The offending field, when known.")
    reason: str


class CollectorAccepted(BaseModel):
    """Every record of the request is acknowledged by the broker (valid ones on the channel topic,
    invalid batch items on events.invalid)."""

    success: Literal[True] = True
    accepted: int
    rejected: int = 0
    errors: list[RejectedCall] = Field(
        default_factory=list, description="The first 100 rejected calls (never their contents)."
    )
    errors_omitted: int = Field(default=0, description="Rejected calls beyond those listed in `errors`.")


class ErrorBody(BaseModel):
    success: Literal[False] = False
    code: str = Field(
        description="invalid_json | invalid_request | too_deep | too_many_items | unauthorized | "
        "origin_not_allowed | payload_too_large | unsupported_encoding | rate_limited | unavailable"
    )
    message: str
    field: str | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    brokers: int = 0
    missing_topics: list[str] = Field(default_factory=list)
    message: str | None = None
    replacements: int = 0
