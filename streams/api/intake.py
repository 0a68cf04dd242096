"""What the collector does with a request body once it has the bytes: authenticate the write key,
validate each Segment call, and turn it into the Kafka records to produce. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from streams.api.credentials import SecretTable
from streams.api.json_tree import json_bytes, nesting_depth
from streams.api.producer import OutRecord
from streams.domain.events import EVENT_TYPES, Event, loads_json
from streams.privacy.suppressions import SuppressionList
from streams.settings import Settings, Source
from streams.topics import INVALID_TOPIC
from streams.wire.codecs import EVENT_CODEC, INVALID_CODEC, SerializationError

_MAX_REASONS = 5
_EXPECTED_TYPES = ", ".join(EVENT_TYPES)
# orjson refuses text nested deeper than this.
PARSER_MAX_DEPTH = 1024
# A batch answer lists at most this many rejections, each reason cut to this length: the answer stays
# small whatever the batch holds, and never carries the items themselves.
MAX_LISTED_ERRORS = 100
_MAX_LISTED_REASON = 200
# An unknown call type is quoted in the reason only when it is a short string.
_MAX_QUOTED_TYPE = 40


class CollectorError(Exception):
    """A request the collector refuses as a whole; becomes an HTTP error with a JSON body.

    ``kept`` is the ``events.invalid`` record of a refused call, produced before the error is answered
    so that nothing a client sends is lost. ``retry_after_s`` becomes the answer's ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        kept: OutRecord | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.kept = kept
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True, slots=True)
class Rejection:
    """One batch item that went to ``events.invalid`` instead of its channel topic."""

    index: int
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    records: list[OutRecord]
    accepted: int
    rejections: list[Rejection]

    def answer(self) -> dict[str, Any]:
        """The 200 body: the counts and the first rejections (index, field, reason; never the item)."""
        listed = self.rejections[:MAX_LISTED_ERRORS]
        return {
            "success": True,
            "accepted": self.accepted,
            "rejected": len(self.rejections),
            "errors": [
                {"index": r.index, "field": r.field, "reason": _cut(r.reason, _MAX_LISTED_REASON)}
                for r in listed
            ],
            "errors_omitted": len(self.rejections) - len(listed),
        }


@dataclass(frozen=True, slots=True)
class Sender:
    """An authenticated caller: the configured write key it sent, and that key's source."""

    write_key: str
    source: Source


def describe_validation_error(exc: ValidationError) -> tuple[str | None, str]:
    """The first offending field, and a message naming every wrong field (``properties: ...``)."""
    first_field: str | None = None
    parts: list[str] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False)[:_MAX_REASONS]:
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"])
        message = message.removeprefix("Value error, ")
        if not field:
            # Model-level rules in Event raise "field: reason"; recover the field from the text.
            head, sep, _ = message.partition(":")
            field = head if sep and " " not in head else ""
            parts.append(message)
        else:
            parts.append(f"{field}: {message}")
        if first_field is None and field:
            first_field = field
    return first_field, "; ".join(parts)


def parse_json(body: bytes, max_depth: int | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it.

    ``max_depth`` (the calls' nesting limit) only completes the message for a body too deep to parse.
    """
    if not body:
        raise CollectorError(400, "invalid_json", "the request body is empty; send a JSON object")
    limit = f", over the limit of {max_depth} levels" if max_depth is not None else ""
    try:
        data = loads_json(body)
    except RecursionError:
        # Text with a 19+ digit number is parsed again by the standard library to keep it exact, and
        # that parser recurses once per level: nested close to 1000 levels deep, it cannot.
        raise CollectorError(
            400, "too_deep", f"the request body is nested too deep to read its long numbers exactly{limit}"
        ) from None
    except ValueError as exc:
        if "depth limit" in str(exc):
            raise CollectorError(
                400, "too_deep", f"the request body is nested more than {PARSER_MAX_DEPTH} levels deep{limit}"
            ) from None
        raise CollectorError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CollectorError(
            400, "invalid_json", f"the request body must be a JSON object, got {type(data).__name__}"
        )
    return data


def write_key_from_header(authorization: str | None) -> str | None:
    """The write key from ``Authorization: Basic base64(writeKey:)``, as Segment sends it."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise CollectorError(
            401,
            "unauthorized",
            f"unsupported Authorization scheme {scheme!r}; send HTTP Basic auth with the write key "
            "as the username and an empty password",
        )
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CollectorError(
            401, "unauthorized", "the Authorization header is not valid base64 of 'writeKey:'"
        ) from None
    return decoded.partition(":")[0]


class Intake:
    """Validation and record building for one collector; holds the write-key table."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._channel_topics = {
            source.channel: settings.channel_topic(source.channel) for source in settings.sources.values()
        }
        self._senders = SecretTable((key, Sender(key, source)) for key, source in settings.sources.items())
        # Erased, suppressed identifiers (docs/privacy.md): a call carrying one is accepted and dropped.
        self.suppressions: SuppressionList | None = None

    def authenticate(self, header_key: str | None, body: dict[str, Any] | None) -> Sender:
        """The sender of the write key (header first, then ``writeKey`` in the body), else 401.

        The key is compared with every configured key in constant time, never looked up
        (:class:`SecretTable`): write keys are public in browsers, but how long an answer takes must
        not reveal how close a guess came.
        """
        key: Any = header_key
        if not key and body is not None:
            key = body.get("writeKey")
        if not key:
            raise CollectorError(
                401,
                "unauthorized",
                "missing write key: send HTTP Basic auth with the write key as the username "
                "(empty password), or 'writeKey' in the JSON body",
            )
        matched = self._senders.find(key) if isinstance(key, str) else None
        if matched is None:
            raise CollectorError(401, "unauthorized", "unknown write key; check the source's write key")
        return matched

    def single(
        self, payload: dict[str, Any], call_type: str, source: Source, received_at: datetime
    ) -> OutRecord | None:
        """The record for one call sent to ``/v1/<call_type>`` (None: suppressed, dropped); 400 naming
        the field when invalid (the call then goes to ``events.invalid``, carried by the error)."""
        field: str | None
        code = "invalid_request"
        depth = nesting_depth(payload)
        if depth > self.settings.max_event_depth:
            code, field, reason = "too_deep", None, self._too_deep(depth)
        else:
            try:
                return self._event_record(payload, call_type, source, received_at)
            except ValidationError as exc:
                field, reason = describe_validation_error(exc)
            except SerializationError as exc:
                field, reason = None, str(exc)
        kept = self._invalid_record(payload, Rejection(0, field, reason), source, received_at)
        raise CollectorError(400, code, reason, field, kept=kept)

    def batch_items(self, body: dict[str, Any]) -> list[Any]:
        """The calls under ``batch``; 400 when it is not an array or holds more than ``max_batch_items``."""
        items = body.get("batch")
        if not isinstance(items, list):
            raise CollectorError(
                400,
                "invalid_request",
                "batch: expected a JSON array of Segment calls under 'batch'",
                "batch",
            )
        limit = self.settings.max_batch_items
        if len(items) > limit:
            raise CollectorError(
                400,
                "too_many_items",
                f"batch: {len(items)} calls, over the limit of {limit} calls per batch; send several batches",
                "batch",
            )
        return items

    def batch(
        self, body: dict[str, Any], source: Source, received_at: datetime, body_bytes: int
    ) -> BatchOutcome:
        """Records for every item of a batch: valid items to the channel topic, the rest to events.invalid."""
        items = self.batch_items(body)
        shared_context = body.get("context") if isinstance(body.get("context"), dict) else None
        shared_sent_at = body.get("sentAt")
        # The shared fields become part of every call; one too deep would make every call too deep.
        for name, shared in (("context", shared_context), ("sentAt", shared_sent_at)):
            depth = 1 + nesting_depth(shared)
            if depth > self.settings.max_event_depth:
                raise CollectorError(400, "too_deep", f"{name}: {self._too_deep(depth)}", name)
        # Only a body larger than one event's limit can hold an oversized item.
        check_sizes = body_bytes > self.settings.max_event_bytes
        records: list[OutRecord] = []
        rejections: list[Rejection] = []
        for index, item in enumerate(items):
            outcome = self._batch_call(
                index, item, shared_context, shared_sent_at, check_sizes, source, received_at
            )
            if outcome is None:
                continue  # suppressed: accepted and dropped
            if isinstance(outcome, Rejection):
                rejections.append(outcome)
                outcome = self._invalid_record(item, outcome, source, received_at)
            records.append(outcome)
        return BatchOutcome(records=records, accepted=len(items) - len(rejections), rejections=rejections)

    def refused_request(
        self, body: bytes, error: CollectorError, source: Source, received_at: datetime
    ) -> OutRecord:
        """The ``events.invalid`` record of a request refused as a whole: the reason, and the body cut to
        ``max_event_bytes`` (decompressed, unless decompressing it is what failed)."""
        limit = self.settings.max_event_bytes
        reason = error.message
        if len(body) > limit:
            reason = f"{reason} (the first {limit} of {len(body)} bytes are kept)"
        return self._invalid(reason, error.field, None, body[:limit], source, received_at)

    def _batch_call(
        self,
        index: int,
        item: Any,
        shared_context: dict[str, Any] | None,
        shared_sent_at: Any,
        check_sizes: bool,
        source: Source,
        received_at: datetime,
    ) -> OutRecord | Rejection | None:
        """The channel record of one batch item, or why it is refused (None: suppressed, dropped)."""
        if not isinstance(item, dict):
            return Rejection(
                index, None, f"batch[{index}]: expected a JSON object, got {type(item).__name__}"
            )
        # Before anything that recurses into the call (the size check's serializer, validation, Avro).
        depth = nesting_depth(item)
        if depth > self.settings.max_event_depth:
            return Rejection(index, None, self._too_deep(depth))
        max_event = self.settings.max_event_bytes
        size = len(json_bytes(item)) if check_sizes else 0
        if size > max_event:
            return Rejection(index, None, f"the event is {size} bytes, over the limit of {max_event} bytes")
        call = _with_batch_defaults(item, shared_context, shared_sent_at)
        call_type = call.get("type")
        if call_type not in EVENT_TYPES:
            if call_type is None:
                return Rejection(index, "type", f"type: missing call type; expected one of {_EXPECTED_TYPES}")
            return Rejection(
                index,
                "type",
                f"type: unknown call type {_quoted(call_type)}; expected one of {_EXPECTED_TYPES}",
            )
        field: str | None
        try:
            return self._event_record(call, None, source, received_at)
        except ValidationError as exc:
            field, reason = describe_validation_error(exc)
        except SerializationError as exc:
            field, reason = None, str(exc)
        return Rejection(index, field, reason)

    def _too_deep(self, depth: int) -> str:
        limit = self.settings.max_event_depth
        return f"the event is nested {depth} levels deep, over the limit of {limit} levels"

    def _event_record(
        self, payload: dict[str, Any], call_type: str | None, source: Source, received_at: datetime
    ) -> OutRecord | None:
        if not payload.get("messageId"):
            # Segment assigns an id when the caller sends none; downstream dedup needs one.
            payload = {**payload, "messageId": str(uuid.uuid4())}
        category = payload.get("category")
        if category is not None:
            payload = _category_into_properties(payload, category)
        event = Event.from_segment(
            payload,
            channel=source.channel,
            source=source.name,
            received_at=received_at,
            call_type=call_type,
            correct_clock=True,
        )
        value = EVENT_CODEC.encode(event.to_avro())
        if self.suppressions is not None and self.suppressions.blocks_record(value):
            return None
        return OutRecord(topic=self._channel_topics[source.channel], key=event.partition_key(), value=value)

    def _invalid_record(
        self, item: Any, rejection: Rejection, source: Source, received_at: datetime
    ) -> OutRecord:
        return self._invalid(
            rejection.reason, rejection.field, str(rejection.index), json_bytes(item), source, received_at
        )

    def _invalid(
        self,
        reason: str,
        field: str | None,
        position: str | None,
        original: bytes,
        source: Source,
        received_at: datetime,
    ) -> OutRecord:
        value = INVALID_CODEC.encode(
            {
                "stage": "collector",
                "reason": reason,
                "field": field,
                "source": source.name,
                "position": position,
                "original": original,
                "receivedAt": received_at,
            }
        )
        return OutRecord(topic=self.invalid_topic, key=source.name.encode(), value=value)


def _with_batch_defaults(
    item: dict[str, Any], context: dict[str, Any] | None, sent_at: Any
) -> dict[str, Any]:
    # Segment's batch endpoint applies a top-level context and sentAt to every call; the call's own win.
    if context is None and sent_at is None:
        return item
    call = dict(item)
    if context is not None:
        own = item.get("context")
        call["context"] = {**context, **own} if isinstance(own, dict) else own if own is not None else context
    if sent_at is not None and call.get("sentAt") is None:
        call["sentAt"] = sent_at
    return call


def _category_into_properties(payload: dict[str, Any], category: Any) -> dict[str, Any]:
    # page/screen calls carry a top-level ``category`` the event schema has no field for; Segment
    # destinations read it as a property, so keep it there rather than drop it.
    properties = payload.get("properties")
    if properties is None:
        return {**payload, "properties": {"category": category}}
    if isinstance(properties, dict) and "category" not in properties:
        return {**payload, "properties": {**properties, "category": category}}
    return payload


def _quoted(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= _MAX_QUOTED_TYPE else f"(a {len(value)}-character string)"
    return f"(a JSON {type(value).__name__})"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
