"""Identifier normalisation and SHA-256 hashing per ad platform (pure).

Ad platforms match uploaded customers on ``sha256(normalised value)`` as lower-case hex, so a value must
be normalised exactly as the platform does before hashing, or it silently matches nobody. omniseg's
identity layer already normalises identifiers, but this module does not rely on that: it applies each
platform's published rules again to whatever string it gets. Every kind is first stripped of surrounding
whitespace; an empty value is ``NotHashable``.

Sources: Google Ads API, Customer Match, "Normalize and hash customer data" (also the Enhanced
Conversions guides); Meta Marketing API, Custom Audiences, "Hashing and Normalization for Multi-Key".

- ``email``, every platform: lower-cased; exactly one ``@`` with a non-empty local part and domain.
  GOOGLE only: for ``gmail.com`` and ``googlemail.com`` every ``.`` in the local part is removed
  (Google: ``jane.doe@gmail.com`` is ``janedoe@gmail.com``). Meta and GENERIC keep dots. Nobody strips
  ``+tags`` (no platform asks for it, and it would merge addresses on a guess).
- ``phone``: E.164 is expected (``+`` then digits); spaces, dashes, dots and parentheses are tolerated
  and dropped, any other character makes the value unhashable (``ext. 12`` would otherwise add
  digits). Without a country code the number is not guessed (``NotHashable``), except that a leading
  ``00`` international prefix counts as ``+``. GOOGLE and GENERIC: ``+`` and the digits (Google asks
  for E.164). META: the digits only, without ``+`` and without leading zeros (Meta: "remove symbols,
  letters and any leading zeros", country code included). 7 to 15 digits, else ``NotHashable``
  (E.164 allows at most 15; fewer than 7 is no real number with its country code).
- ``mobile_advertising_id`` (IDFA/GAID): lower-cased, must be a UUID (Meta: MADID lower-case with
  dashes). GOOGLE: not supported (Google takes mobile ids only unhashed, in their own list type, and
  raw identifiers never leave omniseg).
- ``external_id``: trimmed only; case is kept (retailers' ids can be case-sensitive).

``NotHashable`` messages name the kind, the platform and the reason, never the value (personal data).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from enum import StrEnum
from functools import lru_cache


class Platform(StrEnum):
    GOOGLE = "google_customer_match"
    META = "meta_custom_audience"
    GENERIC = "generic"


class AudienceIdKind(StrEnum):
    """The identifier kinds a destination may receive."""

    EMAIL = "email"
    PHONE = "phone"
    MOBILE_ADVERTISING_ID = "mobile_advertising_id"
    EXTERNAL_ID = "external_id"


class NotHashable(ValueError):
    """A value this platform cannot take for this kind. The message never contains the value."""

    def __init__(self, platform: Platform, kind: AudienceIdKind, reason: str) -> None:
        super().__init__(f"{kind.value} for {platform.value}: {reason}")
        self.platform = platform
        self.kind = kind
        self.reason = reason


_ALL_KINDS = frozenset(AudienceIdKind)
_SUPPORTED: dict[Platform, frozenset[AudienceIdKind]] = {
    Platform.GOOGLE: _ALL_KINDS - {AudienceIdKind.MOBILE_ADVERTISING_ID},
    Platform.META: _ALL_KINDS,
    Platform.GENERIC: _ALL_KINDS,
}
_GOOGLE_DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# After the country-code prefix: ASCII digits and the separators people write numbers with.
_PHONE_BODY = re.compile(r"[0-9 ().-]*")
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15  # E.164


def supported_kinds(platform: Platform) -> frozenset[AudienceIdKind]:
    """GOOGLE: email, phone, external_id (no mobile ids, see the module docstring). META, GENERIC: all."""
    return _SUPPORTED[platform]


def normalise(platform: Platform, kind: AudienceIdKind, value: str) -> str:
    """The platform's normalised form of ``value`` before hashing (rules in the module docstring).

    Raises ``NotHashable`` when the kind is not supported, nothing is left or the value cannot be
    normalised.
    """
    return _normalised(Platform(platform), AudienceIdKind(kind), value)


def hash_identifier(platform: Platform, kind: AudienceIdKind, value: str) -> str:
    """``sha256`` of the UTF-8 normalised value, as 64 lower-case hex characters."""
    return _hashed(Platform(platform), AudienceIdKind(kind), value)


def hashes(
    platform: Platform,
    values: Mapping[AudienceIdKind, Iterable[str]],
    kinds: Collection[AudienceIdKind],
) -> list[tuple[AudienceIdKind, str]]:
    """``(kind, hash)`` for every value of every kind in ``kinds`` the platform supports.

    Unhashable values are skipped, equal hashes of one kind appear once, and the result is sorted by
    ``(kind, hash)`` (kinds compare as their string values).
    """
    wanted = supported_kinds(platform).intersection(kinds)
    found: set[tuple[AudienceIdKind, str]] = set()
    for kind in wanted:
        for value in values.get(kind, ()):
            try:
                found.add((kind, hash_identifier(platform, kind, value)))
            except NotHashable:
                continue
    return sorted(found)


# Bounded: the same contact is hashed again on every audience change, but raw values must not pile up.
@lru_cache(maxsize=65_536)
def _hashed(platform: Platform, kind: AudienceIdKind, value: str) -> str:
    return hashlib.sha256(_normalised(platform, kind, value).encode("utf-8")).hexdigest()


def _normalised(platform: Platform, kind: AudienceIdKind, value: str) -> str:
    if kind not in _SUPPORTED[platform]:
        raise NotHashable(platform, kind, "not supported by this platform")
    text = value.strip()
    if not text:
        raise NotHashable(platform, kind, "empty")
    if kind is AudienceIdKind.EMAIL:
        return _email(platform, text)
    if kind is AudienceIdKind.PHONE:
        return _phone(platform, text)
    if kind is AudienceIdKind.MOBILE_ADVERTISING_ID:
        text = text.lower()
        if not _UUID.fullmatch(text):
            raise NotHashable(platform, kind, "not a UUID")
        return text
    return text  # EXTERNAL_ID: case-sensitive, trimmed only


def _email(platform: Platform, text: str) -> str:
    local, at, domain = text.lower().partition("@")
    if not at or not local or not domain or "@" in domain:
        raise NotHashable(platform, AudienceIdKind.EMAIL, "not an address with one '@', a name and a domain")
    if platform is Platform.GOOGLE and domain in _GOOGLE_DOTLESS_DOMAINS:
        local = local.replace(".", "")
        if not local:
            raise NotHashable(platform, AudienceIdKind.EMAIL, "nothing left of the name without its dots")
    return local + "@" + domain


def _phone(platform: Platform, text: str) -> str:
    if text.startswith("+"):
        body = text[1:]
    elif text.startswith("00"):
        body = text[2:]  # the international prefix, written instead of '+'
    else:
        raise NotHashable(platform, AudienceIdKind.PHONE, "no country code ('+' or '00')")
    if not _PHONE_BODY.fullmatch(body):
        raise NotHashable(platform, AudienceIdKind.PHONE, "not a number with a country code")
    digits = "".join(c for c in body if c.isdigit())
    if platform is Platform.META:
        digits = digits.lstrip("0")
    if len(digits) < _MIN_PHONE_DIGITS:
        raise NotHashable(platform, AudienceIdKind.PHONE, f"fewer than {_MIN_PHONE_DIGITS} digits")
    if len(digits) > _MAX_PHONE_DIGITS:
        raise NotHashable(platform, AudienceIdKind.PHONE, f"more than {_MAX_PHONE_DIGITS} digits")
    return digits if platform is Platform.META else "+" + digits
