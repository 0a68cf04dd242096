"""Secrets the HTTP services check (collector write keys, read API bearer tokens), matched in constant
time.

A presented secret is compared with every known one, each time, whether or not one matched already, and
never used as a dictionary key: how long the check takes must not tell how close a guess came or which
key it matched. Both sides are SHA-256 digests before the comparison, so the comparison does not reveal
the known secrets' lengths either (``hmac.compare_digest`` of unequal lengths returns early).
Destination API keys are checked the same way, against the hashes in their files
(:func:`streams.domain.audiences.destinations.destination_for_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class SecretTable(Generic[T]):
    """Known secrets, each with what it stands for (a source, a token's name); ``find`` matches one."""

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._entries = tuple((_digest(secret), value) for secret, value in entries)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, given: str) -> T | None:
        """What ``given`` stands for, or None: compared with every known secret, in constant time each."""
        if not given:
            return None
        presented = _digest(given)
        found: T | None = None
        for known, value in self._entries:
            # No short cut: every entry is compared, even after a match.
            if hmac.compare_digest(presented, known) and found is None:
                found = value
        return found
