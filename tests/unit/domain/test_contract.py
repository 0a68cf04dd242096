"""The pydantic models and the Avro schemas describe the same records (schemas/*.avsc is the truth)."""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from streams.domain.events import Event
from streams.wire.codecs import EVENT_CODEC, SCHEMA_DIR

_PRIMITIVE = {"string": str, "double": float, "boolean": bool, "long": int}


def _avro_fields(schema: dict[str, Any]) -> dict[str, Any]:
    return {field["name"]: field["type"] for field in schema["fields"]}


def _check(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
    fields = _avro_fields(schema)
    assert set(model.model_fields) == set(fields), f"{path}: model and schema field names differ"
    for name, info in model.model_fields.items():
        _check_type(info.annotation, fields[name], f"{path}.{name}")


def _check_type(annotation: Any, avro: Any, path: str) -> None:
    if get_origin(annotation) is typing.Annotated:  # StrictBool and friends: the type under the rule
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if isinstance(avro, list):  # union: only ["null", X] is used
        assert avro[0] == "null" and len(avro) == 2, f"{path}: unexpected union {avro}"
        assert origin in (types.UnionType, typing.Union) and type(None) in args, f"{path}: must be Optional"
        inner = [arg for arg in args if arg is not type(None)]
        assert len(inner) == 1, path
        _check_type(inner[0], avro[1], path)
        return
    assert not (origin in (types.UnionType, typing.Union) and type(None) in args), (
        f"{path}: must not be Optional"
    )
    if isinstance(avro, str):
        assert annotation is _PRIMITIVE[avro], f"{path}: {annotation} vs avro {avro}"
        return
    kind = avro["type"]
    if kind == "record":
        _check(annotation, avro, path)
    elif kind == "enum":
        assert origin is Literal and list(args) == avro["symbols"], f"{path}: enum symbols differ"
    elif kind == "array":
        assert origin is list, path
        _check_type(args[0], avro["items"], f"{path}[]")
    elif kind == "map":
        assert origin is dict and args[0] is str, f"{path}: a map is dict[str, ...]"
        _check_type(args[1], avro["values"], f"{path}{{}}")
    elif kind == "long" and avro.get("logicalType") == "timestamp-millis":
        assert annotation is datetime, f"{path}: timestamp-millis must be datetime"
    else:
        raise AssertionError(f"{path}: unhandled avro type {avro}")


def test_event_model_matches_event_avsc() -> None:
    schema = json.loads((SCHEMA_DIR / "event.avsc").read_text())
    # traits and properties are JSON objects in the model and JSON text on the wire.
    patched = dict(Event.model_fields)
    assert set(patched) == set(_avro_fields(schema))
    fields = _avro_fields(schema)
    for name, info in Event.model_fields.items():
        if name in ("traits", "properties"):
            assert fields[name] == ["null", "string"]
            continue
        _check_type(info.annotation, fields[name], f"Event.{name}")


def test_invalid_record_schema_has_what_operators_need() -> None:
    schema = json.loads((SCHEMA_DIR / "invalid_record.avsc").read_text())
    assert {"stage", "reason", "field", "source", "position", "original", "receivedAt"} <= set(
        _avro_fields(schema)
    )


def test_event_round_trips_through_avro() -> None:
    event = Event.from_segment(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "c-1",
            "messageId": "m-1",
            "properties": {"total": 12.5, "products": [{"sku": "SKU-1", "price": 12.5, "quantity": 1}]},
            "context": {
                "device": {"id": "d-1", "advertisingId": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
                "ip": "10.0.0.1",
            },
            "timestamp": "2026-11-01T10:00:00.123Z",
        },
        channel="web",
        source="shop",
        received_at=datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC),
    )
    decoded = Event.from_avro(EVENT_CODEC.decode(EVENT_CODEC.encode(event.to_avro())))
    assert decoded == event
    assert decoded.lines[0].sku == "SKU-1"


@pytest.mark.parametrize("path", sorted((SCHEMA_DIR).glob("*.avsc")), ids=lambda p: Path(p).name)
def test_every_schema_has_docs_and_defaults_for_optional_fields(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema.get("doc"), f"{path.name}: top-level doc is required"
    for field in schema["fields"]:
        if isinstance(field["type"], list) and field["type"][0] == "null":
            assert "default" in field and field["default"] is None, f"{path.name}.{field['name']}"


def test_resolved_event_embeds_the_current_event_schema() -> None:
    resolved = json.loads((SCHEMA_DIR / "resolved_event.avsc").read_text())
    embedded = next(field["type"] for field in resolved["fields"] if field["name"] == "event")
    assert embedded == json.loads((SCHEMA_DIR / "event.avsc").read_text()), (
        "schemas/resolved_event.avsc must embed schemas/event.avsc verbatim; regenerate it"
    )
