"""Identifier normalisation, the blocklist, and extraction of identifiers from events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.domain.events import Event
from streams.domain.identifiers import (
    Blocklist,
    Identifier,
    IdKind,
    NormalisationRules,
    RejectedValue,
    RejectReason,
    extract,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
RULES = NormalisationRules()
NORMALISER = RULES.normaliser()


def norm(kind: IdKind, raw: str) -> Identifier | RejectedValue:
    return NORMALISER.normalise(kind, raw)


def value(kind: IdKind, raw: str) -> str:
    result = norm(kind, raw)
    assert isinstance(result, Identifier), result
    return result.value


def rejected(kind: IdKind, raw: str) -> RejectReason:
    result = norm(kind, raw)
    assert isinstance(result, RejectedValue), result
    return result.reason


def make(payload: dict[str, Any], channel: str = "app") -> Event:
    base = {"type": "track", "event": "Viewed", "messageId": "m1"}
    return Event.from_segment({**base, **payload}, channel=channel, source="s", received_at=NOW)  # type: ignore[arg-type]


def test_email_is_trimmed_and_lower_cased() -> None:
    assert value(IdKind.EMAIL, "  Ann.Smith+shop@Example.CO.UK \t") == "ann.smith+shop@example.co.uk"


def test_email_provider_specific_rewrites_are_not_applied() -> None:
    assert value(IdKind.EMAIL, "Ann.Smith@gmail.com") == "ann.smith@gmail.com"


@pytest.mark.parametrize(
    "raw",
    [
        "ann", "ann@", "@example.com", "ann@@example.com", "ann@example", "ann smith@example.com",
        "ann@exa_mple.com", ".ann@example.com", "ann..b@example.com", "ann@-example.com", "ann@example.c0m",
        "Ann <ann@example.com>",
    ],
)  # fmt: skip
def test_impossible_email_is_invalid(raw: str) -> None:
    assert rejected(IdKind.EMAIL, raw) is RejectReason.INVALID


def test_unicode_email_is_accepted() -> None:
    assert value(IdKind.EMAIL, "JOSÉ@Exämple.de") == "josé@exämple.de"


@pytest.mark.parametrize(
    "raw", ["test@test.com", " TEST@Example.com ", "noreply@shop.co.uk", "ann@mail.test", "bob@test.com"]
)
def test_test_and_noreply_emails_are_blocked(raw: str) -> None:
    assert rejected(IdKind.EMAIL, raw) is RejectReason.BLOCKED


@pytest.mark.parametrize("raw", ["07911 123456", "+44 7911 123456", "0044 7911 123456", "(07911) 123-456"])
def test_phone_becomes_e164_with_default_region(raw: str) -> None:
    assert value(IdKind.PHONE, raw) == "+447911123456"


def test_phone_region_is_a_rule() -> None:
    us = NormalisationRules(default_phone_region="us").normaliser()
    assert us.normalise(IdKind.PHONE, "(202) 555-0143") == Identifier(IdKind.PHONE, "+12025550143")


@pytest.mark.parametrize("raw", ["12", "not a phone", "+44 20", "07911 1234564567"])
def test_invalid_phone_is_not_an_identifier(raw: str) -> None:
    result = norm(IdKind.PHONE, raw)
    assert isinstance(result, RejectedValue)
    assert result.reason is RejectReason.INVALID
    assert "phone" in result.detail


def test_unknown_phone_region_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="default_phone_region"):
        NormalisationRules(default_phone_region="XX")


def test_loyalty_card_is_stripped_of_grouping_and_upper_cased() -> None:
    assert value(IdKind.LOYALTY_CARD, " 6335 0012-3456.78ab ") == "63350012345678AB"


def test_crm_id_is_stripped_but_keeps_case() -> None:
    assert value(IdKind.CRM_ID, " 003 Ab-CdE ") == "003AbCdE"


def test_customer_id_keeps_case_and_inner_text() -> None:
    assert value(IdKind.CUSTOMER_ID, " Cust-42aB ") == "Cust-42aB"


def test_advertising_id_is_lower_cased_and_zero_idfa_is_junk() -> None:
    assert value(IdKind.ADVERTISING_ID, "6D92078A-8246-4BA4-AE5B-76104861E7DC") == (
        "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    )
    assert rejected(IdKind.ADVERTISING_ID, "00000000-0000-0000-0000-000000000000") is RejectReason.BLOCKED
    assert rejected(IdKind.ADVERTISING_ID, "not-a-uuid") is RejectReason.INVALID


def test_device_and_anonymous_ids_lower_case_only_case_insensitive_formats() -> None:
    assert value(IdKind.DEVICE_ID, "ABCDEF0123456789") == "abcdef0123456789"
    assert value(IdKind.ANONYMOUS_ID, "6D92078A-8246-4BA4-AE5B-76104861E7DC") == (
        "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    )
    assert value(IdKind.ANONYMOUS_ID, "Session-XYZ") == "Session-XYZ"


BLOCKED_RAW = ["", "  ", "null", "NULL", "undefined", "anonymous", "None", "nan", "0", "000-000", "0000 0000"]


@pytest.mark.parametrize("kind", list(IdKind))
@pytest.mark.parametrize("raw", BLOCKED_RAW)
def test_blocklisted_values_are_blocked_for_every_kind(kind: IdKind, raw: str) -> None:
    assert rejected(kind, raw) is RejectReason.BLOCKED


@given(
    kind=st.sampled_from(list(IdKind)),
    word=st.sampled_from(["null", "undefined", "anonymous", "none", "nan", "unknown", "0", "000"]),
    flips=st.lists(st.booleans(), min_size=9, max_size=9),
    pad=st.sampled_from(["", " ", "\t", "  \n"]),
)
def test_blocked_values_never_become_identifiers_whatever_case_or_padding(
    kind: IdKind, word: str, flips: list[bool], pad: str
) -> None:
    raw = pad + "".join(c.upper() if f else c for c, f in zip(word, flips, strict=False)) + pad
    assert isinstance(norm(kind, raw), RejectedValue)


def test_configured_blocklist_applies() -> None:
    rules = NormalisationRules(
        blocklist=Blocklist(values=("n/a",), emails=("Shared@Shop.com",), phones=("+447911123456",))
    )
    normaliser = rules.normaliser()
    for kind, raw in ((IdKind.EMAIL, "shared@shop.com"), (IdKind.PHONE, "07911 123456")):
        result = normaliser.normalise(kind, raw)
        assert isinstance(result, RejectedValue)
        assert result.reason is RejectReason.BLOCKED
    # The defaults are replaced, not extended: "null" is a value again under these rules.
    assert normaliser.normalise(IdKind.CUSTOMER_ID, "null") == Identifier(IdKind.CUSTOMER_ID, "null")


raw_values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
phone_like = st.from_regex(r"\+?[0-9 ()\-]{6,18}", fullmatch=True)


@given(kind=st.sampled_from(list(IdKind)), raw=raw_values | phone_like)
def test_normalisation_is_idempotent(kind: IdKind, raw: str) -> None:
    first = norm(kind, raw)
    if isinstance(first, Identifier):
        assert norm(kind, first.value) == first
        assert Identifier.from_key(first.key) == first


def test_identifier_key_round_trips_values_with_colons() -> None:
    ident = Identifier(IdKind.DEVICE_ID, "a:b:c")
    assert ident.key == "device_id:a:b:c"
    assert Identifier.from_key(ident.key) == ident
    with pytest.raises(ValueError, match="unknown kind"):
        Identifier.from_key("shoe_size:9")
    with pytest.raises(ValueError, match="expected"):
        Identifier.from_key("email")


def test_extract_maps_every_event_field_to_its_kind() -> None:
    event = make(
        {
            "userId": " C-1 ",
            "anonymousId": "anon-1",
            "identifiers": {
                "email": "Ann@Shop.com",
                "phone": "07911 123456",
                "loyaltyCard": "1234 5678",
                "crmId": "crm 9",
                "espSubscriberId": "sub-7",
            },
            "context": {"device": {"id": "DEV1", "advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}},
        }
    )
    found = extract(event, RULES)
    assert found.rejected == ()
    assert {i.key for i in found.identifiers} == {
        "customer_id:C-1",
        "crm_id:crm9",
        "email:ann@shop.com",
        "loyalty_card:12345678",
        "phone:+447911123456",
        "esp_subscriber_id:sub-7",
        "device_id:DEV1",
        "advertising_id:6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "anonymous_id:anon-1",
    }


def test_extract_reports_rejected_values_with_reasons() -> None:
    event = make(
        {
            "userId": "undefined",
            "anonymousId": "a1",
            "identifiers": {"email": "test@test.com", "phone": "12"},
            "context": {"device": {"advertisingId": IDFA, "adTrackingEnabled": False}},
        }
    )
    found = extract(event, RULES)
    assert found.identifiers == (Identifier(IdKind.ANONYMOUS_ID, "a1"),)
    assert [(r.kind, r.raw, r.reason) for r in found.rejected] == [
        (IdKind.CUSTOMER_ID, "undefined", RejectReason.BLOCKED),
        (IdKind.EMAIL, "test@test.com", RejectReason.BLOCKED),
        (IdKind.PHONE, "12", RejectReason.INVALID),
        (IdKind.ADVERTISING_ID, IDFA, RejectReason.AD_TRACKING_DISABLED),
    ]


def test_extract_rejects_kinds_not_enabled() -> None:
    event = make({"userId": "c1", "context": {"device": {"id": "d1"}}})
    found = extract(event, RULES, enabled={IdKind.CUSTOMER_ID})
    assert found.identifiers == (Identifier(IdKind.CUSTOMER_ID, "c1"),)
    assert [(r.kind, r.reason) for r in found.rejected] == [(IdKind.DEVICE_ID, RejectReason.DISABLED)]


def test_alias_previous_id_is_an_anonymous_id_by_default_and_configurable() -> None:
    event = make({"type": "alias", "previousId": "anon-9", "userId": "c1"})
    assert extract(event, RULES).identifiers == (
        Identifier(IdKind.CUSTOMER_ID, "c1"),
        Identifier(IdKind.ANONYMOUS_ID, "anon-9"),
    )
    as_customer = NormalisationRules(alias_previous_id_kind=IdKind.CUSTOMER_ID)
    assert Identifier(IdKind.CUSTOMER_ID, "anon-9") in extract(event, as_customer).identifiers


def test_extract_deduplicates_identical_identifiers() -> None:
    event = make({"anonymousId": "A1B2", "previousId": " a1b2 "})
    assert extract(event, RULES).identifiers == (Identifier(IdKind.ANONYMOUS_ID, "a1b2"),)
