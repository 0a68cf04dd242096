"""Identifier normalisation, the junk blocklist, and extraction of identifiers from an Event.

An identifier is a typed, normalised value: ``Identifier(IdKind.EMAIL, "ann@example.com")`` with the
table key ``"email:ann@example.com"``. Two raw values name the same identifier exactly when they
normalise to the same key, so every rule below is a statement about when two spellings are "the same":

- ``customer_id`` (``Event.userId``, the retailer's own customer number): trimmed only. Retailers' ids
  can be case-sensitive (opaque database keys), so case is kept.
- ``crm_id`` (``identifiers.crmId``): a separate kind from ``customer_id``: a CRM record number and a
  web login id live in different namespaces, and ``"12345"`` in one says nothing about ``"12345"`` in
  the other. Whitespace and dashes are removed (numbers are copied by hand with grouping); case is kept
  (some CRMs, e.g. 15-character Salesforce ids, are case-sensitive).
- ``loyalty_card``: whitespace, dashes and dots removed, upper-cased: cards are printed in groups and
  keyed by hand at tills, so grouping and case carry no meaning.
- ``email``: trimmed and lower-cased (the local part is case-sensitive in theory, never in practice);
  syntactically impossible addresses are rejected. Provider-specific rewriting (Gmail dots, ``+tags``)
  is NOT done: it would merge people on a guess; ad-platform hashing rules live in the export layer.
- ``phone``: E.164 via ``phonenumbers`` with the rules' default region; numbers that are not valid for
  their region are rejected.
- ``device_id``, ``anonymous_id``: trimmed; UUID-shaped and hex-only values are lower-cased (those
  formats are case-insensitive). ``advertising_id`` (IDFA/GAID) must be a UUID and is lower-cased; it is
  rejected when the event says ad tracking is disabled.
- ``esp_subscriber_id``: trimmed.

Blocked values (``Blocklist``) and invalid values are never identifiers: they come back as
``RejectedValue`` with a reason, so the caller can record why an event lost an identifier.
"""

from __future__ import annotations

import re
from collections.abc import Container
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import NamedTuple

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.domain.events import UUID_PATTERN, Event


class IdKind(StrEnum):
    CUSTOMER_ID = "customer_id"
    CRM_ID = "crm_id"
    EMAIL = "email"
    LOYALTY_CARD = "loyalty_card"
    PHONE = "phone"
    ESP_SUBSCRIBER_ID = "esp_subscriber_id"
    DEVICE_ID = "device_id"
    ADVERTISING_ID = "advertising_id"
    ANONYMOUS_ID = "anonymous_id"


class Identifier(NamedTuple):
    """A normalised identifier. Build it with ``Normaliser.normalise`` (or ``Identifier.from_key``)."""

    kind: IdKind
    value: str

    @property
    def key(self) -> str:
        """The table key, ``"<kind>:<value>"`` (the kind never contains a colon, the value may)."""
        return self.kind + ":" + self.value

    @classmethod
    def from_key(cls, key: str) -> Identifier:
        kind, sep, value = key.partition(":")
        if not sep or not value:
            raise ValueError(f"identifier key {key!r}: expected '<kind>:<value>'")
        try:
            return cls(IdKind(kind), value)
        except ValueError:
            raise ValueError(f"identifier key {key!r}: unknown kind {kind!r}") from None


class RejectReason(StrEnum):
    BLOCKED = "blocked"
    INVALID = "invalid"
    DISABLED = "disabled"
    AD_TRACKING_DISABLED = "ad_tracking_disabled"


class RejectedValue(NamedTuple):
    """A raw value that did not become an identifier, and why."""

    kind: IdKind
    raw: str
    reason: RejectReason
    detail: str


class ExtractedIds(NamedTuple):
    identifiers: tuple[Identifier, ...]
    rejected: tuple[RejectedValue, ...]


_DEFAULT_VALUES = (
    "",
    "null",
    "undefined",
    "anonymous",
    "none",
    "nan",
    "nil",
    "n/a",
    "na",
    "unknown",
    "guest",
    "test",
    "true",
    "false",
    "-",
    "[object object]",
    "{}",
    "[]",
)
_DEFAULT_EMAILS = (
    "test@test.com",
    "test@example.com",
    "test@example.org",
    "test@example.net",
    "example@example.com",
    "email@example.com",
    "user@example.com",
    "name@example.com",
    "foo@bar.com",
    "a@a.com",
    "asdf@asdf.com",
    "test@gmail.com",
    "noemail@noemail.com",
    "none@none.com",
    "no@email.com",
)
_DEFAULT_EMAIL_LOCAL_PARTS = ("noreply", "no-reply", "donotreply", "do-not-reply", "null", "undefined")
_DEFAULT_EMAIL_DOMAINS = ("test.com", "test", "invalid", "localhost")


class Blocklist(BaseModel):
    """Junk values that must never link two people. Compared after trimming and lower-casing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: tuple[str, ...] = Field(default=_DEFAULT_VALUES, description="Blocked for every kind.")
    all_zeros: bool = Field(
        default=True, description="Block values made only of zeros and separators (zero IDFA, 0000-0000)."
    )
    emails: tuple[str, ...] = Field(default=_DEFAULT_EMAILS, description="Blocked email addresses.")
    email_local_parts: tuple[str, ...] = Field(
        default=_DEFAULT_EMAIL_LOCAL_PARTS, description="Blocked at any domain (never a person's inbox)."
    )
    email_domains: tuple[str, ...] = Field(
        default=_DEFAULT_EMAIL_DOMAINS, description="Blocked domains, subdomains included."
    )
    phones: tuple[str, ...] = Field(default=(), description="Blocked phone numbers, in E.164.")

    @field_validator("values", "emails", "email_local_parts", "email_domains", "phones")
    @classmethod
    def _fold(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(item.strip().lower() for item in items)


class NormalisationRules(BaseModel):
    """How raw values become identifiers (part of ``IdentityRules``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_phone_region: str = Field(
        default="GB", description="ISO 3166 region for phone numbers written without a country code."
    )
    alias_previous_id_kind: IdKind = Field(
        default=IdKind.ANONYMOUS_ID,
        description="The kind of Event.previousId (Segment alias calls usually alias an anonymous id).",
    )
    blocklist: Blocklist = Blocklist()

    @field_validator("default_phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        region = region.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}; use an ISO 3166 code such as GB or US")
        return region

    def normaliser(self) -> Normaliser:
        """The compiled normaliser for these rules (built once per rules object)."""
        return self._compiled

    @cached_property
    def _compiled(self) -> Normaliser:
        # A cached_property, not a PrivateAttr: pydantic compares private attributes in ==.
        return Normaliser(self)


_ZERO_CHARS = "0-.:_/+() \t\n\r\f\v"
_UUID = UUID_PATTERN
_HEX = re.compile(r"[0-9a-f]+", re.IGNORECASE)
_LOYALTY_STRIP = re.compile(r"[\s\-.]")
_CRM_STRIP = re.compile(r"[\s\-]")
# Dot-atom local part (no quoted strings), unicode allowed; domain of >= 2 labels with an alphabetic
# (or punycode) top-level label. Deliberately stricter than RFC 5322: quoted local parts and IP-literal
# domains are valid in theory and junk in a retailer's customer data.
_EMAIL_LOCAL = re.compile(r"[^\s@\"(),:;<>\[\]\\.]+(?:\.[^\s@\"(),:;<>\[\]\\.]+)*")
_EMAIL_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")
_EMAIL_TLD = re.compile(r"[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59}")


@lru_cache(maxsize=65536)
def _phone_e164(raw: str, region: str) -> tuple[str | None, str]:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number: {exc}"
    if not phonenumbers.is_valid_number(number):
        return None, f"not a valid phone number for region {region} (or its country code)"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


class Normaliser:
    """Turns raw values into identifiers, applying the blocklist. Pure and thread-safe."""

    __slots__ = ("_domains", "_emails", "_local_parts", "_phones", "_region", "_values", "_zeros")

    def __init__(self, rules: NormalisationRules) -> None:
        blocklist = rules.blocklist
        self._region = rules.default_phone_region
        self._values = frozenset(blocklist.values)
        self._zeros = blocklist.all_zeros
        self._emails = frozenset(blocklist.emails)
        self._local_parts = frozenset(blocklist.email_local_parts)
        self._domains = tuple(blocklist.email_domains)
        self._phones = frozenset(blocklist.phones)

    def normalise(self, kind: IdKind, raw: str) -> Identifier | RejectedValue:
        """The identifier for ``raw``, or why it is not one."""
        text = raw.strip()
        folded = text.lower()
        if folded in self._values:
            return RejectedValue(kind, raw, RejectReason.BLOCKED, "blocklisted value")
        if self._zeros and _all_zeros(folded):
            return RejectedValue(kind, raw, RejectReason.BLOCKED, "only zeros")
        value, detail = self._by_kind(kind, text, folded)
        if value is None:
            return RejectedValue(kind, raw, RejectReason.INVALID, detail)
        # Normalisation can expose junk hidden by separators ("0000 0000", " NULL ").
        if value.lower() in self._values or (self._zeros and _all_zeros(value)):
            return RejectedValue(kind, raw, RejectReason.BLOCKED, "blocklisted after normalisation")
        if kind is IdKind.EMAIL and self._email_blocked(value):
            return RejectedValue(kind, raw, RejectReason.BLOCKED, "blocklisted email")
        if kind is IdKind.PHONE and value in self._phones:
            return RejectedValue(kind, raw, RejectReason.BLOCKED, "blocklisted phone")
        return Identifier(kind, value)

    def _by_kind(self, kind: IdKind, text: str, folded: str) -> tuple[str | None, str]:
        if kind is IdKind.EMAIL:
            return _email(folded)
        if kind is IdKind.PHONE:
            return _phone_e164(text, self._region)
        if kind is IdKind.LOYALTY_CARD:
            value = _LOYALTY_STRIP.sub("", text).upper()
        elif kind is IdKind.CRM_ID:
            value = _CRM_STRIP.sub("", text)
        elif kind is IdKind.ADVERTISING_ID:
            if not _UUID.fullmatch(text):
                return None, "an advertising id (IDFA/GAID) must be a UUID"
            value = folded
        elif kind in (IdKind.DEVICE_ID, IdKind.ANONYMOUS_ID):
            value = folded if _UUID.fullmatch(text) or _HEX.fullmatch(text) else text
        else:
            value = text
        return (value, "") if value else (None, "empty after normalisation")

    def _email_blocked(self, email: str) -> bool:
        if email in self._emails:
            return True
        local, _, domain = email.rpartition("@")
        if local in self._local_parts:
            return True
        return any(domain == blocked or domain.endswith("." + blocked) for blocked in self._domains)


def _all_zeros(value: str) -> bool:
    # "0" present and nothing but zeros and separators: str.strip removes every such character.
    return "0" in value and not value.strip(_ZERO_CHARS)


def _email(folded: str) -> tuple[str | None, str]:
    if len(folded) > 254:
        return None, "email longer than 254 characters"
    local, at, domain = folded.rpartition("@")
    if not at or not local or not domain:
        return None, "email needs exactly one '@' with text on both sides"
    if len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        return None, "email local part is not a valid address"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_EMAIL_LABEL.fullmatch(label) for label in labels[:-1]):
        return None, "email domain is not a valid host name"
    if not _EMAIL_TLD.fullmatch(labels[-1]):
        return None, "email domain has no valid top-level label"
    return folded, ""


def extract(
    event: Event, rules: NormalisationRules, enabled: Container[IdKind] | None = None
) -> ExtractedIds:
    """The event's normalised identifiers (deduplicated, in field order) and its rejected raw values.

    Kinds not in ``enabled`` (``None``: all kinds) are rejected with reason ``disabled``.
    Field mapping: userId -> customer_id, identifiers.crmId -> crm_id, identifiers.email/phone/
    loyaltyCard/espSubscriberId, context.device.id -> device_id, context.device.advertisingId ->
    advertising_id, anonymousId -> anonymous_id, previousId -> ``rules.alias_previous_id_kind``.
    """
    ids = event.identifiers
    device = event.context.device
    raw: list[tuple[IdKind, str | None]] = [
        (IdKind.CUSTOMER_ID, event.userId),
        (IdKind.CRM_ID, ids.crmId),
        (IdKind.EMAIL, ids.email),
        (IdKind.LOYALTY_CARD, ids.loyaltyCard),
        (IdKind.PHONE, ids.phone),
        (IdKind.ESP_SUBSCRIBER_ID, ids.espSubscriberId),
        (IdKind.DEVICE_ID, device.id if device else None),
        (IdKind.ADVERTISING_ID, device.advertisingId if device else None),
        (IdKind.ANONYMOUS_ID, event.anonymousId),
        (rules.alias_previous_id_kind, event.previousId),
    ]
    normaliser = rules.normaliser()
    found: list[Identifier] = []
    rejected: list[RejectedValue] = []
    for kind, value in raw:
        if value is None:
            continue
        if enabled is not None and kind not in enabled:
            rejected.append(
                RejectedValue(kind, value, RejectReason.DISABLED, "kind not in the identity rules")
            )
            continue
        if kind is IdKind.ADVERTISING_ID and device is not None and device.adTrackingEnabled is False:
            rejected.append(
                RejectedValue(
                    kind, value, RejectReason.AD_TRACKING_DISABLED, "device.adTrackingEnabled is false"
                )
            )
            continue
        result = normaliser.normalise(kind, value)
        if isinstance(result, Identifier):
            if result not in found:
                found.append(result)
        else:
            rejected.append(result)
    return ExtractedIds(tuple(found), tuple(rejected))
