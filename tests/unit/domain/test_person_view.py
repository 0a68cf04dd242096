"""Parsing the identifier of a person look-up, and the view's JSON and text forms."""

from __future__ import annotations

from datetime import datetime

import pytest

from streams.domain.identifiers import Identifier, IdKind, NormalisationRules
from streams.domain.person_view import (
    ChannelActivity,
    CurrentSegment,
    IdentifierQueryError,
    MergeRecord,
    PersonEvent,
    PersonIdentifier,
    PersonView,
    parse_identifier,
)

NORMALISER = NormalisationRules().normaliser()


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("  Ann@Shop.COM ", None, Identifier(IdKind.EMAIL, "ann@shop.com")),
        ("  Ann@Shop.COM ", "email", Identifier(IdKind.EMAIL, "ann@shop.com")),
        ("email: ANN@shop.com", None, Identifier(IdKind.EMAIL, "ann@shop.com")),
        ("Customer_ID:C-1042", None, Identifier(IdKind.CUSTOMER_ID, "C-1042")),
        ("lc 12-34.56", "loyalty_card", Identifier(IdKind.LOYALTY_CARD, "LC123456")),
        ("07911 123456", "phone", Identifier(IdKind.PHONE, "+447911123456")),
        ("phone:+44 7911 123456", None, Identifier(IdKind.PHONE, "+447911123456")),
    ],
)
def test_identifier_is_normalised_like_incoming_events(
    text: str, kind: str | None, expected: Identifier
) -> None:
    assert parse_identifier(text, kind, NORMALISER) == expected


def test_value_without_kind_asks_for_one() -> None:
    with pytest.raises(IdentifierQueryError, match=r"kind:value, e\.g\. customer_id:12345"):
        parse_identifier(" 12345 ", None, NORMALISER)


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(IdentifierQueryError, match=r"unknown identifier kind 'shoe'.*customer_id, crm_id"):
        parse_identifier("42", "shoe", NORMALISER)


@pytest.mark.parametrize(("text", "reason"), [("test@test.com", "blocked"), ("not-an-email@", "invalid")])
def test_junk_identifiers_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(IdentifierQueryError, match=f"is not a usable identifier \\({reason}"):
        parse_identifier(text, "email", NORMALISER)


def _view() -> PersonView:
    t1, t2, t3 = datetime(2026, 1, 4, 8), datetime(2026, 1, 5, 9), datetime(2026, 1, 6, 15)
    return PersonView(
        looked_up="email:ann@shop.com",
        person_id="C",
        person_ids=("C", "A", "B"),
        identifiers=(PersonIdentifier("email:ann@shop.com", "email", "ann@shop.com", t1, 1, "C"),),
        merges=(MergeRecord("chg-2", "C", "B", ("B", "A"), ("device_id:d",), "e5", "web", t2),),
        rejections=(),
        channels=(ChannelActivity("store", 1, t3, t3), ChannelActivity("web", 2, t2, t2)),
        recent_events=(PersonEvent("e4", "store", "track", "Order Completed", "", t3, "C", 25.0, "GBP"),),
        segments=(
            CurrentSegment("high-value", "", datetime(2026, 1, 7, 10)),
            CurrentSegment("already-purchased", "product:P1", datetime(2026, 1, 7, 11)),
        ),
    )


def test_first_and_last_seen_are_event_time_only() -> None:
    """The identifier was received (t1) before any event happened: received time is another clock."""
    view = _view()
    assert view.first_seen == datetime(2026, 1, 5, 9) and view.last_seen == datetime(2026, 1, 6, 15)
    assert view.event_count == 3


def test_json_form_has_merged_ids_utc_times_segments_and_which_clock_each_time_is() -> None:
    data = _view().to_dict()
    assert data["merged_person_ids"] == ["A", "B"]
    assert data["first_seen"] == "2026-01-05T09:00:00Z"
    assert data["segments"] == [
        {"segment_id": "high-value", "subject": "", "since": "2026-01-07T10:00:00Z"},
        {"segment_id": "already-purchased", "subject": "product:P1", "since": "2026-01-07T11:00:00Z"},
    ]
    assert data["time_basis"]["first_seen"].startswith("event time")
    assert data["time_basis"]["identifiers.first_seen"].startswith("received time")
    assert data["time_basis"]["merges.at"].startswith("received time")
    assert data["time_basis"]["segments.since"].startswith("evaluation time")
    assert data["merges"][0]["merged_person_ids"] == ["B", "A"]
    assert data["recent_events"][0]["revenue"] == 25.0


def test_text_form_names_the_person_and_merges() -> None:
    text = _view().render()
    assert text.startswith("person     C\nfound by   email:ann@shop.com")
    assert "B -> C" in text and "25.00 GBP" in text and "merged ids A, B" in text


def test_text_form_shows_current_segments_and_says_which_clock_each_time_is() -> None:
    text = _view().render()
    assert "segments now (2;" in text
    assert "high-value" in text and "already-purchased product:P1" in text
    assert "events (event time)" in text
    assert "first received 2026-01-04T08:00:00Z" in text
    assert "merges (1; received time)" in text
