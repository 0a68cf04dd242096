"""Destination configuration: the examples of deploy/destinations/ load against the example segments;
every rule refuses with one line naming the file, the destination and the field, and every problem of
every file is reported at once; audiences match as configured; API keys identify one destination."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.audiences.destinations import (
    AudienceIdKind,
    AudienceSource,
    Destination,
    DestinationError,
    DestinationKind,
    audience_id,
    destination_for_key,
    load_destination_dir,
    load_destinations,
    parse_audience_id,
    segment_map,
)
from streams.domain.segments.loader import load_definitions

DEPLOY = Path(__file__).resolve().parents[4] / "deploy"
PURPOSES = ("advertising", "ad_user_data", "ad_personalization", "analytics")
SEGMENTS: dict[str, tuple[str, str | None]] = {
    "browsed": ("segment", None),
    "bought": ("suppression", "product"),
    "bought-category": ("suppression", "category"),
}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def destination(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "ads",
        "kind": "generic",
        "api_key_sha256": key_hash("secret-1"),
        "audiences": [{"segment": "browsed"}],
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def text(*raws: dict[str, Any]) -> str:
    return yaml.safe_dump(list(raws), sort_keys=False)


def problems_of(*files: tuple[str, str], **kw: Any) -> list[str]:
    with pytest.raises(DestinationError) as caught:
        load_destinations(files, **kw)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def example_segments() -> dict[str, tuple[str, str | None]]:
    files = sorted((DEPLOY / "segments").glob("*.yaml"))
    return segment_map(load_definitions((str(f), f.read_text(encoding="utf-8")) for f in files))


def test_the_example_destinations_load_against_the_example_segments() -> None:
    segments = example_segments()
    assert segments["already-purchased"] == ("suppression", "product")
    assert segments["already-purchased-category"] == ("suppression", "category")
    assert segments["high-value"] == ("segment", None)
    found = load_destination_dir(DEPLOY / "destinations", purposes=PURPOSES, segments=segments)
    by_id = {d.id: d for d in found}
    assert sorted(by_id) == ["google-ads", "meta-ads"]
    google, meta = by_id["google-ads"], by_id["meta-ads"]
    assert google.kind is DestinationKind.GOOGLE and meta.kind is DestinationKind.META
    assert google.consent == ("ad_user_data", "ad_personalization") and meta.consent == ("advertising",)
    assert AudienceIdKind.MOBILE_ADVERTISING_ID not in google.identifiers
    assert google.reads("already-purchased", "product:P0001")
    assert google.reads("already-purchased-category", "category:shoes")
    assert meta.reads("already-purchased-category", "category:electronics")
    assert not meta.reads("already-purchased-category", "category:shoes")
    # The committed hashes belong to no known key: not even the empty one or the id opens them.
    for key in ("", "google-ads", "meta-ads", "password", "change-me"):
        assert destination_for_key(found, key) is None


def test_the_documented_shape_with_its_defaults() -> None:
    doc = """
id: google-ads
name: Google Ads (Customer Match)
kind: google_customer_match
api_key_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
audiences:
  - segment: browsed
  - segment: bought
    subjects: "product:*"
  - segment: bought
    subjects: "product:blouse-123"
  - segment: bought-category
    subjects: "category:blouses"
"""
    (found,) = load_destinations([("d.yaml", doc)], purposes=PURPOSES, segments=SEGMENTS)
    assert found.name == "Google Ads (Customer Match)"
    assert found.identifiers == (AudienceIdKind.EMAIL, AudienceIdKind.PHONE)
    assert found.consent == ("advertising",)
    assert found.audiences[1] == AudienceSource(segment="bought", subjects="product:*")


def test_a_single_identifier_or_purpose_may_be_written_without_a_list() -> None:
    (found,) = load_destinations([("f.yaml", text(destination(identifiers="email", consent="analytics")))])
    assert found.identifiers == (AudienceIdKind.EMAIL,) and found.consent == ("analytics",)


TWO = [destination(), destination(id="other", api_key_sha256=key_hash("secret-2"))]


@pytest.mark.parametrize(
    ("doc", "ids"),
    [
        (yaml.safe_dump(TWO[0]), ["ads"]),
        (yaml.safe_dump(TWO), ["ads", "other"]),
        (yaml.safe_dump({"destinations": TWO}), ["ads", "other"]),
        ("\n---\n".join(yaml.safe_dump(raw) for raw in TWO), ["ads", "other"]),
        ("# nothing configured yet\n", []),
    ],
    ids=["mapping", "list", "destinations-key", "documents", "empty"],
)
def test_a_file_holds_one_destination_a_list_or_a_destinations_list(doc: str, ids: list[str]) -> None:
    assert [d.id for d in load_destinations([("f.yaml", doc)])] == ids


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (destination(id="Ads"), "id", "lower-case letters"),
        (destination(id="-ads"), "id", "starting with a letter or digit"),
        (destination(id="a" * 64), "id", "at most 63"),
        (destination(id="ads\n"), "id", "lower-case letters"),
        (destination(kind="google"), "kind", "'google_customer_match', 'meta_custom_audience' or 'generic'"),
        (destination(kind=None), "kind", "Field required"),
        (destination(api_key_sha256="abc"), "api_key_sha256", "`omniseg destinations key`"),
        (destination(api_key_sha256=key_hash("k").upper()), "api_key_sha256", "64 lower-case hex"),
        (destination(api_key_sha256=key_hash("")), "api_key_sha256", "an empty key"),
        (destination(identifiers=[]), "identifiers", "at least one identifier kind"),
        (destination(identifiers=["email", "fax"]), "identifiers[1]", "'mobile_advertising_id'"),
        (destination(identifiers=["email", "phone", "email"]), "identifiers", "'email' is listed twice"),
        (
            destination(kind="google_customer_match", identifiers=["email", "mobile_advertising_id"]),
            "identifiers",
            "Google Customer Match takes mobile advertising ids only unhashed",
        ),
        (destination(consent=[]), "consent", "at least one consent purpose"),
        (destination(consent=["advertising", "Ad-Data"]), "consent[1]", "'Ad-Data': use lower-case"),
        (destination(consent=["a" * 41]), "consent[0]", "at most 40"),
        (destination(consent=["advertising", "advertising"]), "consent", "listed twice"),
        (destination(consent=["profiling"]), "consent[0]", "'profiling' is not configured (known: ad_"),
        (destination(audiences=[]), "audiences", "at least one audience"),
        (destination(audiences=[{"segment": "Browsed"}]), "audiences[0].segment", "segment id 'Browsed'"),
        (destination(audiences=[{"segment": "browsed", "extra": 1}]), "audiences[0].extra", "not permitted"),
        (destination(audiences=[{"subjects": "product:*"}]), "audiences[0].segment", "Field required"),
        (
            destination(audiences=[{"segment": "bought", "subjects": "product:"}]),
            "audiences[0].subjects",
            "'product:*', 'category:*'",
        ),
        (
            destination(audiences=[{"segment": "bought", "subjects": "brand:*"}]),
            "audiences[0].subjects",
            "'product:<id>'",
        ),
        (
            destination(audiences=[{"segment": "bought", "subjects": "product:blue shirt"}]),
            "audiences[0].subjects",
            "no spaces",
        ),
        (
            destination(audiences=[{"segment": "bought", "subjects": "product:shirt-*"}]),
            "audiences[0].subjects",
            "'*' only alone",
        ),
        (
            destination(
                audiences=[
                    {"segment": "browsed"},
                    {"segment": "bought", "subjects": "product:*"},
                    {"segment": "bought", "subjects": "product:*"},
                ]
            ),
            "audiences",
            "[2] repeats [1] (segment 'bought', subjects 'product:*')",
        ),
        (destination(audiences=[{"segment": "nope"}]), "audiences[0].segment", "unknown segment 'nope'"),
        (
            destination(audiences=[{"segment": "browsed", "subjects": "product:*"}]),
            "audiences[0].subjects",
            "'browsed' is a whole segment",
        ),
        (
            destination(audiences=[{"segment": "bought"}]),
            "audiences[0].subjects",
            "'bought' is a per-product/category audience: name its subjects, e.g. subjects: 'product:*'",
        ),
        (
            destination(audiences=[{"segment": "bought-category"}]),
            "audiences[0].subjects",
            "e.g. subjects: 'category:*'",
        ),
        (
            destination(audiences=[{"segment": "bought", "subjects": "category:shoes"}]),
            "audiences[0].subjects",
            "'bought' is per product: use 'product:*' or 'product:<id>'",
        ),
        (
            destination(audiences=[{"segment": "bought-category", "subjects": "product:*"}]),
            "audiences[0].subjects",
            "is per category",
        ),
        (destination(region="eu"), "region", "Extra inputs are not permitted"),
    ],
)
def test_each_rule_names_the_file_the_destination_and_the_field(
    raw: dict[str, Any], field: str, words: str
) -> None:
    problems = problems_of(("conf/ads.yaml", text(raw)), purposes=PURPOSES, segments=SEGMENTS)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"conf/ads.yaml: destination {raw['id']!r}: {field}: "), problems
    assert words in problems[0]


def test_the_pasted_api_key_itself_is_not_echoed() -> None:
    (problem,) = problems_of(("a.yaml", text(destination(api_key_sha256="sk_live_TOPSECRET"))))
    assert "TOPSECRET" not in problem
    assert "the SHA-256 hex of the API key, e.g. from `omniseg destinations key`" in problem


def test_ids_and_api_keys_are_unique_across_files() -> None:
    first = text(destination())
    again = text(destination(api_key_sha256=key_hash("secret-2")))
    same_key = text(destination(id="other"))
    assert problems_of(("a.yaml", first), ("b.yaml", again)) == [
        "b.yaml: destination 'ads': id: id 'ads' is already defined in a.yaml"
    ]
    assert problems_of(("a.yaml", first), ("b.yaml", same_key)) == [
        "b.yaml: destination 'other': api_key_sha256: the same API key as destination 'ads' (a.yaml); "
        "a key must identify one destination"
    ]


def test_every_problem_of_every_file_is_reported_and_nothing_is_returned() -> None:
    good = text(destination(id="fine", api_key_sha256=key_hash("secret-9")))
    first = text(
        destination(id="one", kind="tiktok", consent=["profiling"]),
        destination(id="two", api_key_sha256=key_hash("secret-2"), audiences=[{"segment": "nope"}]),
    )
    second = "id: three\nkind: [\n"
    third = text(destination(id="four", identifiers=["fax"], api_key_sha256="x")) + "- 42\n"
    problems = problems_of(
        ("good.yaml", good),
        ("first.yaml", first),
        ("second.yaml", second),
        ("third.yaml", third),
        purposes=PURPOSES,
        segments=SEGMENTS,
    )
    assert [p.split(": ")[0] for p in problems] == ["first.yaml"] * 2 + ["second.yaml", "third.yaml"]
    assert problems[0].startswith("first.yaml: destination 'one': kind: ")
    assert problems[1] == "first.yaml: destination 'two': audiences[0].segment: unknown segment 'nope'"
    assert problems[2].startswith("second.yaml: not valid YAML: ")
    assert problems[3] == "third.yaml: destination #2: expected a mapping, got int"
    # A file whose items are all mappings reports each field of each destination.
    problems = problems_of(
        ("third.yaml", text(destination(id="four", identifiers=["fax"], api_key_sha256="x")))
    )
    assert [p.split(": ")[2] for p in problems] == ["api_key_sha256", "identifiers[0]"]


def test_load_destination_dir_reads_yaml_and_yml_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(text(destination(id="b", api_key_sha256=key_hash("b"))))
    (tmp_path / "a.yaml").write_text(text(destination(id="a", api_key_sha256=key_hash("a"))))
    (tmp_path / "notes.txt").write_text("not read")
    assert [d.id for d in load_destination_dir(tmp_path)] == ["a", "b"]
    (tmp_path / "c.yaml").write_text(text(destination(id="a", api_key_sha256=key_hash("c"))))
    with pytest.raises(DestinationError) as caught:
        load_destination_dir(tmp_path)
    assert caught.value.problems == [
        f"{tmp_path / 'c.yaml'}: destination 'a': id: id 'a' is already defined in {tmp_path / 'a.yaml'}"
    ]


def test_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DestinationError) as caught:
        load_destination_dir(tmp_path / "missing")
    assert caught.value.problems == [f"{tmp_path / 'missing'}: not a directory of destination files"]


def test_sources_match_whole_segments_wildcards_and_exact_subjects() -> None:
    whole = AudienceSource(segment="seg")
    products = AudienceSource(segment="sup", subjects="product:*")
    categories = AudienceSource(segment="sup", subjects="category:*")
    blouse = AudienceSource(segment="sup", subjects="product:blouse-123")
    assert whole.matches("seg", None)
    assert not whole.matches("seg", "product:x") and not whole.matches("other", None)
    assert products.matches("sup", "product:x") and products.matches("sup", "product:blouse-123")
    assert not products.matches("sup", "category:x") and not products.matches("sup", None)
    assert not products.matches("other", "product:x") and not products.matches("sup", "product:")
    assert categories.matches("sup", "category:shoes") and not categories.matches("sup", "product:shoes")
    assert blouse.matches("sup", "product:blouse-123")
    assert not blouse.matches("sup", "product:blouse-1234") and not blouse.matches("sup", None)
    found = Destination(
        id="d", kind=DestinationKind.GENERIC, api_key_sha256=key_hash("k"), audiences=(whole, blouse)
    )
    assert found.reads("seg", None) and found.reads("sup", "product:blouse-123")
    assert not found.reads("sup", "product:other") and not found.reads("sup", None)


segment_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,30}", fullmatch=True)
subjects = st.builds(
    lambda per, rest: f"{per}:{rest}", st.sampled_from(["product", "category"]), st.text(min_size=1)
)


@given(segment_ids, st.none() | subjects)
def test_audience_ids_round_trip(segment_id: str, subject: str | None) -> None:
    assert parse_audience_id(audience_id(segment_id, subject)) == (segment_id, subject)


def test_audience_id_forms() -> None:
    assert audience_id("high-value", None) == "high-value"
    assert audience_id("already-purchased", "product:a/b") == "already-purchased/product:a/b"
    assert parse_audience_id("already-purchased/product:a/b") == ("already-purchased", "product:a/b")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty audience id"),
        ("/product:x", "'' is not a segment id"),
        ("High-Value", "'High-Value' is not a segment id"),
        ("seg/", "expected 'product:<id>' or 'category:<name>', got ''"),
        ("seg/brand:x", "got 'brand:x'"),
        ("seg/product:", "got 'product:'"),
    ],
)
def test_malformed_audience_ids_are_refused_in_one_line(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]+$") as caught:
        parse_audience_id(text)
    assert words in str(caught.value)


def test_api_keys_identify_one_destination() -> None:
    one, two, three = (
        Destination(
            id=name,
            kind=DestinationKind.GENERIC,
            api_key_sha256=key_hash(f"key-{name}"),
            audiences=(AudienceSource(segment="seg"),),
        )
        for name in ("one", "two", "three")
    )
    assert two.accepts_key("key-two")
    assert not two.accepts_key("key-one") and not two.accepts_key("") and not two.accepts_key("KEY-TWO")
    everyone = [one, two, three]
    assert destination_for_key(everyone, "key-one") is one
    assert destination_for_key(everyone, "key-three") is three
    assert destination_for_key(everyone, "key-four") is None
    assert destination_for_key(everyone, "") is None
    assert destination_for_key([], "key-one") is None


def test_destination_for_key_compares_every_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.domain.audiences.destinations as module

    many = [
        Destination(
            id=f"d{i}",
            kind=DestinationKind.GENERIC,
            api_key_sha256=key_hash(f"key-{i}"),
            audiences=(AudienceSource(segment="seg"),),
        )
        for i in range(5)
    ]
    compared: list[str] = []
    real = module.hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(module.hmac, "compare_digest", counting)
    assert destination_for_key(many, "key-0") is many[0]
    assert compared == [d.api_key_sha256 for d in many]
