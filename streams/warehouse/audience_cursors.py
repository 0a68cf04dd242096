"""Cursors and snapshot page tokens of the audience pull API (pure: no ClickHouse).

A **cursor** is an offset of ``audiences.deltas`` written in decimal: cursor c means "every delta at an
offset < c is included". A **page token** carries a snapshot from one page to the next: the snapshot's
cursor, how many equal hash-prefix ranges it is split into and the next range to read,
bound to its destination and audience. Both are checked strictly: anything this module did not write
is a :class:`CursorError`, never a guess.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

MAX_CURSOR = 2**63 - 1  # Kafka offsets are signed 64-bit
# Range bounds are the first 8 hex digits of a hash (a 32-bit prefix), so a snapshot has at most 2**24
# ranges (each then spans 256 prefixes): ~1.7e11 members at 10,000 per page.
_PREFIX_DIGITS = 8
_PREFIXES = 16**_PREFIX_DIGITS
MAX_RANGES = 2**24
_DIGITS = re.compile(r"(0|[1-9][0-9]{0,18})")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}")
_TAG = re.compile(r"[0-9a-f]{12}")
_TOKEN_VERSION = 1


class CursorError(ValueError):
    """A cursor or page token this API did not give out, or one ahead of the newest delta (400)."""


class CursorExpired(ValueError):
    """A cursor older than the retained deltas (410): the client must take a new snapshot."""


def parse_cursor(text: str) -> int:
    """The offset of a cursor given by a client; raises :class:`CursorError` for anything else."""
    if not _DIGITS.fullmatch(text) or int(text) > MAX_CURSOR:
        raise CursorError(
            f"cursor {text[:40]!r} is not a cursor of this API; take a new snapshot when in doubt"
        )
    return int(text)


def format_cursor(cursor: int) -> str:
    return str(cursor)


@dataclass(frozen=True, slots=True)
class PageToken:
    cursor: int  # the snapshot's cursor
    ranges: int  # equal hash-prefix ranges the snapshot is split into (1..MAX_RANGES)
    page: int  # the range to read next, 0 <= page < ranges


def ranges_for(size: int, page_size: int) -> int:
    """The fewest ranges that put about ``page_size`` of ``size`` members in each (hashes are uniform,
    so a range holds its share of the members, give or take a few per cent)."""
    return min(max(1, -(-size // page_size)), MAX_RANGES)


def hash_range(ranges: int, page: int) -> tuple[str | None, str | None]:
    """``(lo, hi)`` of range ``page``: hashes ``>= lo`` and ``< hi``, None for no bound.

    Hashes are lower-case hex of one length, so string order is numeric order, and an 8-digit prefix
    bound compares with a whole hash as the numbers do. Range ``page`` starts at prefix
    ``page * 16**8 // ranges``: the ranges are equal to within one prefix. The first range has no lower
    bound and the last none above, so every string falls in exactly one range.
    """
    if not 1 <= ranges <= MAX_RANGES or not 0 <= page < ranges:
        raise ValueError(f"page {page} outside 0..{ranges - 1} (ranges 1..{MAX_RANGES})")
    lo = f"{page * _PREFIXES // ranges:0{_PREFIX_DIGITS}x}" if page > 0 else None
    hi = f"{(page + 1) * _PREFIXES // ranges:0{_PREFIX_DIGITS}x}" if page < ranges - 1 else None
    return lo, hi


def _tag(destination_id: str, audience_id: str) -> str:
    return hashlib.sha256(f"{destination_id}\n{audience_id}".encode()).hexdigest()[:12]


def encode_page_token(token: PageToken, destination_id: str, audience_id: str) -> str:
    """The opaque token of the page ``token.page`` of this audience's snapshot."""
    body = [_TOKEN_VERSION, token.cursor, token.ranges, token.page, _tag(destination_id, audience_id)]
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(text: str, destination_id: str, audience_id: str) -> PageToken:
    """The page a token asks for; raises :class:`CursorError` unless :func:`encode_page_token` wrote
    exactly this token for this audience."""
    malformed = CursorError(
        f"page token {text[:40]!r} is not a page token of this API; start the snapshot again"
    )
    if not _TOKEN.fullmatch(text):
        raise malformed
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise malformed from None
    if not (isinstance(body, list) and len(body) == 5):
        raise malformed
    version, cursor, ranges, page, tag = body
    numbers = (version, cursor, ranges, page)
    if not all(type(n) is int for n in numbers) or version != _TOKEN_VERSION:
        raise malformed
    if not (isinstance(tag, str) and _TAG.fullmatch(tag)):
        raise malformed
    if not (0 <= cursor <= MAX_CURSOR and 1 <= ranges <= MAX_RANGES and 0 < page < ranges):
        raise malformed
    token = PageToken(cursor, ranges, page)
    if encode_page_token(token, destination_id, audience_id) != text:
        if tag != _tag(destination_id, audience_id):
            raise CursorError("the page token belongs to another audience's snapshot; start it again")
        raise malformed
    return token
