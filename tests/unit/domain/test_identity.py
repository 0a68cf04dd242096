"""IdentityGraph behaviour by example, the rules file, and persistence errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.domain.events import Event
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import (
    PERSON_NAMESPACE,
    Attached,
    Created,
    IdentityGraph,
    IdentityRules,
    IdentityRulesError,
    IdentityStateError,
    LinkRejection,
    Merged,
    NoUsableIdentifierError,
    PersonRecord,
    Rejected,
    TypeRule,
    person_id_for,
)

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def cid(v: str) -> Identifier:
    return Identifier(IdKind.CUSTOMER_ID, v)


def email(v: str) -> Identifier:
    return Identifier(IdKind.EMAIL, v)


def device(v: str) -> Identifier:
    return Identifier(IdKind.DEVICE_ID, v)


def anon(v: str) -> Identifier:
    return Identifier(IdKind.ANONYMOUS_ID, v)


def test_new_identifier_gets_a_deterministic_person_id() -> None:
    resolution = IdentityGraph().link([anon("a1"), email("ann@shop.com")], 100, "e1")
    # Seeded by the highest-priority identifier, so the same input always gives the same id.
    assert resolution.person_id == str(uuid.uuid5(PERSON_NAMESPACE, "email:ann@shop.com"))
    assert resolution.outcomes == (
        Created(resolution.person_id, email("ann@shop.com"), 100),
        Attached(resolution.person_id, anon("a1")),
    )


def test_merge_keeps_older_person() -> None:
    graph = IdentityGraph()
    old = graph.link([anon("web")], 100, "e1").person_id
    new = graph.link([cid("c1"), anon("app")], 200, "e2").person_id
    resolution = graph.link([cid("c1"), anon("web")], 300, "e3")
    assert resolution.person_id == old
    assert resolution.merges == (Merged(old, new, ("anonymous_id:app", "customer_id:c1"), "e3", 300),)
    assert graph.person_of(cid("c1")) == old
    assert graph.record(new) == PersonRecord(200, old)


def test_merge_tie_on_first_seen_keeps_smaller_person_id() -> None:
    graph = IdentityGraph()
    a = graph.link([anon("a")], 100).person_id
    b = graph.link([anon("b")], 100).person_id
    merged = graph.link([anon("a"), anon("b")], 100).person_id
    assert merged == min(a, b)


def test_shared_family_ipad_link_is_rejected() -> None:
    graph = IdentityGraph()
    mum = graph.link([cid("mum"), device("ipad")], 100, "e1").person_id
    resolution = graph.link([cid("son"), device("ipad")], 200, "e2")
    son = resolution.person_id
    assert son != mum
    assert resolution.rejections == (
        Rejected(device("ipad"), son, LinkRejection.MERGE_LIMIT, mum, IdKind.CUSTOMER_ID),
    )
    assert graph.person_of(device("ipad")) == mum
    assert {i.key for i in graph.identifiers_of(son)} == {"customer_id:son"}


def test_logged_in_customer_keeps_the_event_when_its_email_belongs_to_another_customer() -> None:
    graph = IdentityGraph()
    ann = graph.link([cid("ann"), email("family@shop.com")], 100).person_id
    resolution = graph.link([cid("bob"), email("family@shop.com")], 200)
    # The event's person always holds its highest-priority identifier (the login), not the email.
    assert resolution.person_id != ann
    assert graph.person_of(cid("bob")) == resolution.person_id
    assert [r.identifier for r in resolution.rejections] == [email("family@shop.com")]


def test_unknown_identifier_beyond_its_limit_is_rejected() -> None:
    rules = IdentityRules(
        identifier_types=(TypeRule(kind=IdKind.CUSTOMER_ID, limit=1), TypeRule(kind=IdKind.EMAIL, limit=2))
    )
    graph = IdentityGraph(rules)
    person = graph.link([cid("c1"), email("1@shop.com"), email("2@shop.com")], 1).person_id
    resolution = graph.link([cid("c1"), email("3@shop.com")], 2)
    assert resolution.person_id == person
    assert resolution.rejections == (
        Rejected(email("3@shop.com"), person, LinkRejection.LIMIT, None, IdKind.EMAIL),
    )
    assert graph.person_of(email("3@shop.com")) is None


def test_highest_priority_identifier_seeds_its_own_person_when_the_known_person_is_full() -> None:
    rules = IdentityRules(
        identifier_types=(TypeRule(kind=IdKind.EMAIL, limit=1), TypeRule(kind=IdKind.ANONYMOUS_ID))
    )
    graph = IdentityGraph(rules)
    first = graph.link([anon("a"), email("1@shop.com")], 1).person_id
    resolution = graph.link([anon("a"), email("2@shop.com")], 2)
    assert resolution.person_id == person_id_for(email("2@shop.com")) != first
    assert resolution.rejections == (
        Rejected(anon("a"), resolution.person_id, LinkRejection.MERGE_LIMIT, first, IdKind.EMAIL),
    )


def test_event_with_all_identifiers_in_one_person_changes_nothing() -> None:
    graph = IdentityGraph()
    graph.link([cid("c1"), email("ann@shop.com"), anon("a")], 1)
    graph.drain_changes()
    resolution = graph.link([anon("a"), cid("c1")], 2)
    assert resolution.outcomes == ()
    assert not resolution.changed
    assert not graph.drain_changes()


def test_late_event_with_old_person_id_folds_into_survivor() -> None:
    graph = IdentityGraph()
    first = graph.link([anon("a")], 1).person_id
    second = graph.link([anon("b")], 2).person_id
    third = graph.link([anon("c")], 3).person_id
    graph.link([anon("b"), anon("c")], 4)
    graph.link([anon("a"), anon("c")], 5)
    assert graph.record(third) == PersonRecord(3, second)  # the chain third -> second -> first
    assert graph.canonical(third) == graph.canonical(second) == graph.canonical(first) == first


def test_canonical_of_unknown_person_raises() -> None:
    with pytest.raises(KeyError, match="unknown person id"):
        IdentityGraph().canonical("nope")


def test_link_without_usable_identifier_raises() -> None:
    rules = IdentityRules(identifier_types=(TypeRule(kind=IdKind.CUSTOMER_ID, limit=1),))
    with pytest.raises(NoUsableIdentifierError, match="anonymous_id"):
        IdentityGraph(rules).link([anon("a")], 1)
    with pytest.raises(NoUsableIdentifierError):
        IdentityGraph(rules).link([], 1)


def test_identifier_of_a_kind_dropped_from_the_rules_is_no_longer_used() -> None:
    graph = IdentityGraph()
    graph.link([cid("c1"), device("d1")], 1)
    only_customers = IdentityRules(identifier_types=(TypeRule(kind=IdKind.CUSTOMER_ID, limit=1),))
    rebuilt = IdentityGraph.from_records(*graph.records(), rules=only_customers)
    with pytest.raises(NoUsableIdentifierError):
        rebuilt.link([device("d1")], 2)
    resolution = rebuilt.link([cid("c2"), device("d1")], 2)
    assert resolution.rejections == (
        Rejected(device("d1"), resolution.person_id, LinkRejection.DISABLED, None, IdKind.DEVICE_ID),
    )


def test_blocked_email_never_links() -> None:
    graph = IdentityGraph()
    ann = event({"userId": "ann", "identifiers": {"email": "test@test.com"}}, "m1")
    bob = event({"userId": "bob", "identifiers": {"email": " TEST@test.com"}}, "m2")
    (found, first), (_, second) = graph.link_event(ann, 1), graph.link_event(bob, 2)
    assert first.person_id != second.person_id
    assert second.merges == () and second.rejections == ()
    assert [r.raw for r in found.rejected] == ["test@test.com"]
    assert all(not key.startswith("email:") for key in graph.records()[0])


def test_spellings_of_one_email_and_phone_link_one_person() -> None:
    graph = IdentityGraph()
    _, web = graph.link_event(
        event({"anonymousId": "w1", "identifiers": {"email": "Ann@Shop.com "}}, "m1"), 1
    )
    _, store = graph.link_event(
        event({"identifiers": {"email": "ann@shop.com", "phone": "07911 123456"}}, "m2"), 2
    )
    _, app = graph.link_event(
        event({"anonymousId": "p1", "identifiers": {"phone": "+44 7911 123456"}}, "m3"), 3
    )
    assert web.person_id == store.person_id == app.person_id


def test_drain_changes_returns_changed_records_once() -> None:
    graph = IdentityGraph()
    pid = graph.link([cid("c1"), anon("a")], 7).person_id
    changes = graph.drain_changes()
    assert changes.identifiers == {"customer_id:c1": pid, "anonymous_id:a": pid}
    assert changes.persons == {pid: PersonRecord(7, None)}
    assert not graph.drain_changes()


def test_person_id_for_matches_created_ids() -> None:
    assert IdentityGraph().link([cid("c9")], 1).person_id == person_id_for(cid("c9"))


@pytest.mark.parametrize(
    ("identifiers", "persons", "message"),
    [
        ({"email:a@b.co": "p2"}, {"p1": (1, None)}, "unknown person 'p2'"),
        ({"email:a@b.co": "p1"}, {"p1": (1, "p2"), "p2": (0, None)}, "merged person 'p1'"),
        ({}, {"p1": (1, None)}, "live but has no identifiers"),
        ({"shoe:9": "p1"}, {"p1": (1, None)}, "known kind"),
        ({"email:a@b.co": "p1"}, {"p1": (1, None), "p2": (1, "p3")}, "merged_into 'p3' is unknown"),
        ({"email:a@b.co": "p1"}, {"p1": (1, None), "p2": (1, "p3"), "p3": (1, "p2")}, "cycle"),
        ({"email:a@b.co": "p1"}, {"p1": ("soon", None)}, "bad record"),
    ],
)
def test_inconsistent_records_are_refused_naming_the_key(
    identifiers: dict[str, str], persons: dict[str, Any], message: str
) -> None:
    with pytest.raises(IdentityStateError, match=message):
        IdentityGraph.from_records(identifiers, persons)


def test_default_rules_file_equals_the_built_in_defaults() -> None:
    assert IdentityRules.from_yaml(REPO / "deploy" / "identity.yaml") == IdentityRules()


def test_rules_error_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text("identifier_types:\n  - {kind: email, limit: 0}\n")
    with pytest.raises(IdentityRulesError, match=r"identity\.yaml: identifier_types\.0\.limit"):
        IdentityRules.from_yaml(path)
    path.write_text("identifier_types:\n  - {kind: shoe_size}\n")
    with pytest.raises(IdentityRulesError, match=r"identifier_types\.0\.kind"):
        IdentityRules.from_yaml(path)
    path.write_text("identifier_types:\n  - {kind: email}\n  - {kind: email}\n")
    with pytest.raises(IdentityRulesError, match="listed twice"):
        IdentityRules.from_yaml(path)
    path.write_text("normalisation: {default_phone_region: ZZ}\n")
    with pytest.raises(IdentityRulesError, match=r"normalisation\.default_phone_region"):
        IdentityRules.from_yaml(path)
    path.write_text("identifier_types: [\n")
    with pytest.raises(IdentityRulesError, match="not valid YAML"):
        IdentityRules.from_yaml(path)
    path.write_text("- just a list\n")
    with pytest.raises(IdentityRulesError, match="mapping"):
        IdentityRules.from_yaml(path)
    with pytest.raises(IdentityRulesError, match="cannot read"):
        IdentityRules.from_yaml(tmp_path / "missing.yaml")


def test_empty_rules_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    path.write_text("# nothing\n")
    assert IdentityRules.from_yaml(path) == IdentityRules()


def event(payload: dict[str, Any], message_id: str) -> Event:
    return Event.from_segment(
        {"type": "identify", "messageId": message_id, **payload}, channel="web", source="s", received_at=NOW
    )
