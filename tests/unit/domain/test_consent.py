"""Consent rules: newest by event time wins, refusal wins a tie, merges are symmetric, defaults apply,
category names are read through the policy, and a value that is not a boolean is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.consent import ConsentPolicy, ConsentValueError, Decision, fold, newer

PURPOSES = ("advertising", "email", "ad_user_data")
decisions = st.builds(Decision, st.booleans(), st.integers(0, 20))
statements = st.dictionaries(st.sampled_from(PURPOSES), decisions)


def test_the_newest_decision_by_event_time_wins_whatever_the_order_of_arrival() -> None:
    early, late = Decision(True, 10), Decision(False, 20)
    assert fold(fold({}, {"email": late}), {"email": early}) == {"email": late}
    assert fold(fold({}, {"email": early}), {"email": late}) == {"email": late}


def test_a_refusal_wins_a_tie() -> None:
    assert newer(Decision(True, 5), Decision(False, 5))
    assert not newer(Decision(False, 5), Decision(True, 5))


@given(st.lists(statements, max_size=8), st.data())
def test_folding_is_independent_of_the_order_of_statements(
    items: list[dict[str, Decision]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(items))
    one: dict[str, Decision] = {}
    two: dict[str, Decision] = {}
    for item in items:
        one = fold(one, item)
    for item in shuffled:
        two = fold(two, item)
    assert one == two
    for purpose, decision in one.items():
        newest = max(d.at for item in items for p, d in item.items() if p == purpose)
        assert decision.at == newest
        refused_then = any(
            not d.granted for item in items for p, d in item.items() if p == purpose and d.at == newest
        )
        assert decision.granted is not refused_then


@given(statements, statements)
def test_a_merge_keeps_the_newest_per_purpose_whichever_person_survives(
    survivor: dict[str, Decision], merged: dict[str, Decision]
) -> None:
    assert fold(survivor, merged) == fold(merged, survivor)


def test_defaults_apply_to_a_person_who_never_said() -> None:
    policy = ConsentPolicy(purposes=PURPOSES, defaults={"email": True})
    assert policy.granted({}, "email")
    assert not policy.granted({}, "advertising")  # opt-in unless configured
    assert not policy.granted({"email": Decision(False, 1)}, "email")
    assert policy.allows({"advertising": Decision(True, 1)}, ["advertising", "email"])
    assert not policy.allows({"advertising": Decision(True, 1)}, ["advertising", "ad_user_data"])


def test_categories_are_read_case_insensitively_and_through_aliases() -> None:
    policy = ConsentPolicy(purposes=PURPOSES, aliases={"marketing": "email"})
    stated = policy.statement(
        {"Advertising": True, "Marketing": False, "Ad-User Data": True, "Functional": True}, 7
    )
    assert stated == {
        "advertising": Decision(True, 7),
        "email": Decision(False, 7),
        "ad_user_data": Decision(True, 7),
    }


@pytest.mark.parametrize("value", ["false", "true", 1, 0, None, [], {}])
def test_a_value_that_is_not_a_boolean_is_refused_with_the_category(value: object) -> None:
    policy = ConsentPolicy(purposes=PURPOSES)
    with pytest.raises(ConsentValueError, match="consent 'Advertising': expected true or false"):
        policy.statement({"Advertising": value}, 1)


def test_a_policy_naming_unknown_purposes_is_refused() -> None:
    with pytest.raises(ValueError, match="not a configured purpose"):
        ConsentPolicy(purposes=("email",), defaults={"advertising": True})
    with pytest.raises(ValueError, match="not a configured purpose"):
        ConsentPolicy(purposes=("email",), aliases={"marketing": "ads"})
    with pytest.raises(ValueError, match="lower-case"):
        ConsentPolicy(purposes=("Email",))
