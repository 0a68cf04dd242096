"""Output positions of a single writer: a header on every record it owns, so a restarted writer
republishes exactly what a crash left unpublished (docs/decisions/0011-link-writer-positions.md). The
link writer and the audience writer use it, each with its own header name."""

from __future__ import annotations

import struct

from confluent_kafka import Message

# Header on every record the link writer owns: (offset in identity.links, index among that event's
# writer-owned records), big endian. A restarted writer reads the newest one per partition and skips
# what it already published (see streams/stages/identity/link_writer.py).
POSITION_HEADER = "omniseg-link-pos"
# The audience writer's: (offset in audiences.inputs, index among that input's deltas).
AUDIENCE_POSITION_HEADER = "omniseg-audience-pos"
_POSITION = struct.Struct(">qi")


def encode_position(offset: int, index: int) -> bytes:
    return _POSITION.pack(offset, index)


def position_of(msg: Message, header: str = POSITION_HEADER) -> tuple[int, int] | None:
    raw = msg.headers() or ()
    headers = list(raw.items()) if isinstance(raw, dict) else list(raw)
    for name, value in headers:
        if name == header and isinstance(value, bytes) and len(value) == _POSITION.size:
            offset, index = _POSITION.unpack(value)
            return offset, index
    return None
