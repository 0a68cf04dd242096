"""The single product view (pure): parsing with clear errors, id normalisation, lookup and upserts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.catalog import (
    Catalog,
    CatalogError,
    Product,
    normalise_ean,
    parse_catalog,
    render_csv,
)
from streams.sources.catalog_import import EXAMPLE_CATALOG, simulated_catalog
from streams.wire.codecs import PRODUCT_CODEC

HEADER = "product_id,name,category,brand,price,currency,web_sku,app_product_id,ean\n"


def _csv(*rows: str) -> str:
    return HEADER + "".join(row + "\n" for row in rows)


def _problems(text: str, fmt: str = "csv") -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, source="products.csv", fmt=fmt)  # type: ignore[arg-type]
    return [(p.line, p.field, p.message) for p in info.value.problems]


# --- parsing ----------------------------------------------------------------------------------------------


def test_csv_parses_every_column_and_splits_ids_on_bar() -> None:
    products = parse_catalog(
        _csv("P1, Runner ,shoes,Stride,59.90,gbp,SKU-1|SKU-1b,app-1, 4006381333931 |0-12345-67890-5"),
        source="c.csv",
        fmt="csv",
    )
    assert products == [
        Product(
            product_id="P1",
            name="Runner",
            category="shoes",
            brand="Stride",
            price=59.9,
            currency="GBP",
            web_skus=("SKU-1", "SKU-1b"),
            app_product_ids=("app-1",),
            eans=("4006381333931", "012345678905"),
        )
    ]


def test_jsonl_takes_lists_numbers_and_the_same_keys() -> None:
    text = (
        '{"product_id": "P1", "price": 5, "web_sku": ["A", "B"], "ean": 4006381333931}\n'
        "\n"
        '{"product_id": 2, "app_product_id": "x|y"}\n'
    )
    first, second = parse_catalog(text, source="c.jsonl", fmt="jsonl")
    assert first.web_skus == ("A", "B") and first.eans == ("4006381333931",) and first.price == 5.0
    assert second.product_id == "2" and second.app_product_ids == ("x", "y")


def test_missing_product_id_and_bad_price_name_file_line_and_field() -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(_csv("P1,a,,,1.5,,,,", ",b,,,2,,,,", "P3,c,,,£3,,,,"), source="shop.csv", fmt="csv")
    message = str(info.value)
    assert "shop.csv, line 3, field product_id: missing" in message
    assert "shop.csv, line 4, field price: '£3' is not a number" in message


def test_every_problem_is_reported_not_only_the_first() -> None:
    problems = _problems(_csv(",a,,,,,,,", "P2,,,,-1,,,,", "P3,,,,,EURO,,,", "P4,,,,,,,,12AB"))
    assert [(line, field) for line, field, _ in problems] == [
        (2, "product_id"),
        (3, "price"),
        (4, "currency"),
        (5, "ean"),
    ]


def test_error_message_lists_at_most_twenty_problems() -> None:
    rows = [f"P{i},,,,x,,,," for i in range(25)]
    with pytest.raises(CatalogError) as info:
        parse_catalog(_csv(*rows), source="big.csv", fmt="csv")
    assert len(info.value.problems) == 25
    assert str(info.value).splitlines()[-1] == "... and 5 more problems"


def test_unknown_columns_are_named() -> None:
    problems = _problems("product_id,colour,size\nP1,red,9\n")
    assert problems[0][0] == 1 and "'colour', 'size'" in problems[0][2]


def test_unknown_jsonl_keys_are_named_with_their_line() -> None:
    problems = _problems('{"product_id": "P1"}\n{"product_id": "P2", "sku": "x"}\n', fmt="jsonl")
    assert problems[0][0] == 2 and "'sku'" in problems[0][2]


def test_missing_product_id_column_is_an_error() -> None:
    assert _problems("name,price\nRunner,3\n")[-1][:2] == (1, "product_id")


def test_empty_file_and_header_only_are_errors() -> None:
    assert "empty" in _problems("")[0][2]
    assert "empty" in _problems(HEADER)[0][2]
    assert "empty" in _problems("\n\n", fmt="jsonl")[0][2]


def test_bad_json_line_is_reported_with_its_line() -> None:
    problems = _problems('{"product_id": "P1"}\n{"product_id": \n[1]\n', fmt="jsonl")
    assert [p[0] for p in problems] == [2, 3]
    assert "not valid JSON" in problems[0][2] and "JSON object" in problems[1][2]


def test_too_many_cells_is_reported() -> None:
    assert _problems(_csv("P1,a,b,c,1,GBP,s,a,4006381333931,extra"))[0][0] == 2


def test_duplicate_product_id_in_one_file_is_an_error() -> None:
    problems = _problems(_csv("P1,,,,,,,,", "P1,,,,,,,,"))
    assert problems == [(3, "product_id", "'P1' already defined on line 2")]


def test_channel_id_claimed_by_two_products_in_one_file_is_an_error() -> None:
    problems = _problems(_csv("P1,,,,,,SKU-1,,4006381333931", "P2,,,,,,SKU-1,,04006381333931"))
    assert [(line, field) for line, field, _ in problems] == [(3, "web_sku"), (3, "ean")]
    assert "also names product 'P1' (line 2)" in problems[0][2]


def test_web_sku_equal_to_another_products_id_is_an_error() -> None:
    problems = _problems(_csv("P1,,,,,,,,", "P2,,,,,,P1,,"))
    assert problems[0][:2] == (3, "web_sku")


def test_render_csv_round_trips() -> None:
    products = simulated_catalog(3)
    assert parse_catalog(render_csv(products), source="x", fmt="csv") == products


# --- the example file -------------------------------------------------------------------------------------


def test_example_catalog_is_the_demo_simulations_catalog() -> None:
    """Regenerate with: omniseg catalog example (streams.sources.catalog_import.write_example_catalog)."""
    assert EXAMPLE_CATALOG.read_text() == render_csv(simulated_catalog())
    parsed = parse_catalog(EXAMPLE_CATALOG.read_text(), source=str(EXAMPLE_CATALOG), fmt="csv")
    assert parsed == simulated_catalog() and len(parsed) >= 30


def test_demo_events_map_to_catalog_products() -> None:
    from streams.domain.events import Event
    from streams.domain.simulation import generate

    catalog = Catalog.of(simulated_catalog())
    channels: set[str] = set()
    now = datetime.now(UTC)
    for channel, call in generate(seed=7, customers=80, days=7, start=datetime(2026, 3, 1, tzinfo=UTC)):
        event = Event.from_segment(call, channel=channel, source="sim", received_at=now)
        for line in event.lines:
            channels.add(channel)
            found = catalog.lookup(sku=line.sku, ean=line.ean, app_product_id=line.appProductId)
            assert found is not None, line
    assert channels == {"web", "app", "store"}


# --- normalisation and lookup -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["4006381333931", "04006381333931", " 4006381333931 ", "4006-3813-33931", "400 6381 33393 1"],
)
def test_ean13_and_gtin14_forms_find_the_same_product(raw: str) -> None:
    catalog = Catalog.of([Product("P1", eans=("4006381333931",))])
    found = catalog.lookup(ean=raw)
    assert found is not None and found.product_id == "P1"


def test_upc_a_and_its_ean13_form_are_one_code() -> None:
    catalog = Catalog.of([Product("P1", eans=("012345678905",))])
    assert catalog.lookup(ean="0012345678905") is not None
    assert normalise_ean("12345678905") == "00012345678905"


@pytest.mark.parametrize("raw", ["", "  ", "0000000000000", "ABC", "123456789012345", "\uff14" * 13])
def test_non_codes_normalise_to_nothing(raw: str) -> None:
    assert normalise_ean(raw) is None


def test_sku_and_app_ids_are_stripped_but_case_sensitive() -> None:
    catalog = Catalog.of([Product("P1", web_skus=("SKU-1",), app_product_ids=("app-1",))])
    assert catalog.lookup(sku="  SKU-1 ") is not None
    assert catalog.lookup(app_product_id="app-1\t") is not None
    assert catalog.lookup(sku="sku-1") is None


def test_web_sku_equal_to_a_product_id_finds_it() -> None:
    catalog = Catalog.of([Product("P1"), Product("P2", web_skus=("SKU-2",))])
    assert catalog.lookup(sku="P1") == Product("P1")
    assert catalog.lookup(app_product_id="P1") is None


def test_first_known_id_wins_in_order_sku_ean_app() -> None:
    a = Product("A", web_skus=("S",))
    b = Product("B", eans=("4006381333931",))
    c = Product("C", app_product_ids=("X",))
    catalog = Catalog.of([a, b, c])
    assert catalog.lookup(sku="S", ean="4006381333931", app_product_id="X") == a
    assert catalog.lookup(sku="unknown", ean="4006381333931", app_product_id="X") == b
    assert catalog.lookup(sku="unknown", ean="junk", app_product_id="X") == c
    assert catalog.lookup() is None


def test_upsert_replaces_the_old_ids_of_a_product() -> None:
    catalog = Catalog.of([Product("P1", web_skus=("OLD",), eans=("4006381333931",))])
    catalog.upsert(Product("P1", web_skus=("NEW",), category="shoes"))
    assert catalog.lookup(sku="OLD") is None
    assert catalog.lookup(ean="4006381333931") is None
    found = catalog.lookup(sku="NEW")
    assert found is not None and found.category == "shoes" and len(catalog) == 1


def test_an_id_claimed_by_two_products_belongs_to_the_last_upsert() -> None:
    catalog = Catalog.of([Product("A", web_skus=("S",)), Product("B", web_skus=("S",))])
    assert catalog.lookup(sku="S") == Product("B", web_skus=("S",))
    catalog.upsert(Product("A", name="renamed", web_skus=("S",)))
    assert catalog.lookup(sku="S") == Product("A", name="renamed", web_skus=("S",))


def test_replacing_the_loser_does_not_take_the_id_from_the_winner() -> None:
    catalog = Catalog.of([Product("A", web_skus=("S",)), Product("B", web_skus=("S",))])
    catalog.upsert(Product("A"))  # A's old ids are dropped only where they still point at A
    catalog.remove("A")
    assert catalog.lookup(sku="S") == Product("B", web_skus=("S",))


def test_remove_forgets_the_product_and_its_ids() -> None:
    catalog = Catalog.of([Product("P1", web_skus=("S",))])
    catalog.remove("P1")
    catalog.remove("never-there")
    assert catalog.get("P1") is None and catalog.lookup(sku="S") is None and len(catalog) == 0


def test_avro_round_trip() -> None:
    product = simulated_catalog()[0]
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    record = PRODUCT_CODEC.decode(PRODUCT_CODEC.encode(product.to_avro(at, deleted=True)))
    assert Product.from_avro(record) == product
    assert record["deleted"] is True and record["updatedAt"] == at


# --- property: every channel id of every product finds that product ---------------------------------------

_id = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcxyz0123456789-_.", min_size=1, max_size=12)
_gtin = st.integers(min_value=1, max_value=10**14 - 1)


@st.composite
def _catalogs(draw: st.DrawFn) -> list[Product]:
    count = draw(st.integers(min_value=1, max_value=25))
    pids = draw(st.lists(_id.map(lambda s: f"P{s}"), min_size=count, max_size=count, unique=True))
    skus = draw(st.lists(_id.map(lambda s: f"S{s}"), min_size=count * 2, max_size=count * 2, unique=True))
    apps = draw(st.lists(_id, min_size=count * 2, max_size=count * 2, unique=True))
    eans = draw(st.lists(_gtin, min_size=count * 2, max_size=count * 2, unique=True))
    products = []
    for i, pid in enumerate(pids):
        n_sku, n_app, n_ean = (draw(st.integers(0, 2)) for _ in range(3))
        products.append(
            Product(
                pid,
                web_skus=tuple(skus[2 * i : 2 * i + n_sku]),
                app_product_ids=tuple(apps[2 * i : 2 * i + n_app]),
                # EANs written in any of their equal forms: as-is, GTIN-14, with separators.
                eans=tuple(
                    draw(st.sampled_from([str(e), str(e).zfill(14), f" {str(e).zfill(13)} "]))
                    for e in eans[2 * i : 2 * i + n_ean]
                ),
            )
        )
    return products


@given(_catalogs())
def test_every_channel_id_of_every_product_finds_that_product(products: list[Product]) -> None:
    catalog = Catalog.of(products)
    assert len(catalog) == len(products)
    for product in products:
        assert catalog.get(product.product_id) == product
        assert catalog.lookup(sku=product.product_id) == product
        for sku in product.web_skus:
            assert catalog.lookup(sku=f" {sku} ") == product
        for app in product.app_product_ids:
            assert catalog.lookup(app_product_id=app) == product
        for ean in product.eans:
            gtin = normalise_ean(ean)
            assert gtin is not None
            assert catalog.lookup(ean=ean) == product
            assert catalog.lookup(ean=gtin) == product
            assert catalog.lookup(ean=gtin.lstrip("0")) == product


@given(_catalogs())
def test_csv_round_trip_keeps_every_lookup(products: list[Product]) -> None:
    parsed = parse_catalog(render_csv(products), source="p.csv", fmt="csv")
    catalog = Catalog.of(parsed)
    for product in products:
        for sku in product.web_skus:
            assert catalog.lookup(sku=sku) == catalog.get(product.product_id)
        for ean in product.eans:
            found = catalog.lookup(ean=ean)
            assert found is not None and found.product_id == product.product_id
