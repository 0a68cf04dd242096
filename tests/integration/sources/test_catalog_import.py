"""The product catalog end to end: import into the real broker, replicas that see updates without a
restart, --delete-missing, and the ClickHouse table and view (on 18.16 and on chDB)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.catalog import CatalogError, Product, render_csv
from streams.settings import Settings
from streams.sources.catalog_import import (
    EXAMPLE_CATALOG,
    CatalogImportFailed,
    import_catalog,
    read_live_products,
    simulated_catalog,
)
from streams.stages.segments.catalog import CatalogReplica
from streams.warehouse import migrations
from streams.warehouse.products import ENRICHED_LINES_SQL, PRODUCT_COLUMNS, product_rows

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., Settings]


def _poll_until(replica: CatalogReplica, done: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the replica did not see the update in time"
        replica.poll()
        time.sleep(0.05)


def test_example_catalog_imports_and_a_replica_finds_every_channel_id(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    acked: list[int] = []
    report = import_catalog(settings, EXAMPLE_CATALOG, progress=acked.append)
    expected = simulated_catalog()
    assert report.products == len(expected) == sum(acked)
    replica = CatalogReplica(settings)
    try:
        assert replica.load(timeout_s=30) == len(expected)
        assert len(replica.catalog) == len(expected)
        for product in expected:
            assert replica.catalog.lookup(sku=product.web_skus[0]) == product
            assert replica.catalog.lookup(ean=product.eans[0].zfill(14)) == product
            assert replica.catalog.lookup(app_product_id=product.app_product_ids[0]) == product
    finally:
        replica.close()


def test_running_replica_sees_a_changed_product_and_deletions_without_restart(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    import_catalog(settings, EXAMPLE_CATALOG)
    replica = CatalogReplica(settings)
    try:
        replica.load(timeout_s=30)
        first, second, *rest = simulated_catalog()
        changed = Product(
            first.product_id,
            name=first.name,
            category="sale",
            brand=first.brand,
            price=9.99,
            currency="GBP",
            web_skus=("SKU-NEW-1",),
            eans=first.eans,
        )
        update = tmp_path / "update.jsonl"
        update.write_text(
            json.dumps(
                {
                    "product_id": first.product_id,
                    "name": first.name,
                    "category": "sale",
                    "brand": first.brand,
                    "price": 9.99,
                    "currency": "GBP",
                    "web_sku": ["SKU-NEW-1"],
                    "ean": int(first.eans[0]),  # a number: leading zeros would be lost, and do not matter
                }
            )
            + "\n"
        )
        assert replica.poll() == 0
        import_catalog(settings, update)
        _poll_until(replica, lambda: replica.catalog.get(first.product_id) == changed)
        assert replica.catalog.lookup(sku="SKU-NEW-1") == changed
        assert replica.catalog.lookup(sku=first.web_skus[0]) is None  # the old SKU left with the update
        assert replica.catalog.lookup(app_product_id=first.app_product_ids[0]) is None

        # --delete-missing: only `second` stays; every other product gets a deleted=true record.
        keep = tmp_path / "keep.csv"
        keep.write_text(render_csv([second]))
        report = import_catalog(settings, keep, delete_missing=True)
        assert sorted(report.deleted) == sorted(p.product_id for p in [first, *rest])
        _poll_until(replica, lambda: len(replica.catalog) == 1)
        assert replica.catalog.lookup(ean=second.eans[0]) == second
        assert replica.catalog.lookup(sku="SKU-NEW-1") is None
    finally:
        replica.close()
    # A fresh replica (a restarted worker) reads the same state from the compacted topic.
    assert read_live_products(settings) == [second]


def test_a_restarted_replica_gives_a_contested_id_to_the_newest_claim(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    # Products whose keys land in different partitions: replay order across them is arbitrary.
    old.write_text(render_csv([Product(f"A{i}", web_skus=(f"X{i}",)) for i in range(8)]))
    new.write_text(render_csv([Product(f"B{i}", web_skus=(f"X{i}",)) for i in range(8)]))
    import_catalog(settings, old, now=_T0)
    import_catalog(settings, new, now=_T1)
    replica = CatalogReplica(settings)
    try:
        replica.load(timeout_s=30)
        assert len(replica.catalog) == 16
        for i in range(8):
            assert replica.catalog.lookup(sku=f"X{i}") == Product(f"B{i}", web_skus=(f"X{i}",))
    finally:
        replica.close()


def test_a_file_with_errors_produces_nothing(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    settings = settings_factory()
    bad = tmp_path / "bad.csv"
    rows = render_csv(simulated_catalog()).splitlines()
    rows[5] = rows[5].replace(",GBP,", ",GBP,").replace(rows[5].split(",")[4], "12,50", 1)
    rows[9] = "," + rows[9].split(",", 1)[1]
    bad.write_text("\n".join(rows) + "\n")
    with pytest.raises(CatalogError) as info:
        import_catalog(settings, bad)
    message = str(info.value)
    assert f"{bad}, line 10, field product_id: missing" in message
    assert f"{bad}, line 6" in message
    assert read_live_products(settings) == []


def test_broker_down_is_a_clear_error(settings_factory: SettingsFactory) -> None:
    settings = settings_factory().model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with pytest.raises(CatalogImportFailed, match=r"cannot reach Kafka at 127\.0\.0\.1"):
        import_catalog(settings, EXAMPLE_CATALOG, connect_timeout_s=2)


def test_cli_import_and_list(settings_factory: SettingsFactory, tmp_path: Path) -> None:
    from streams.cli.catalog import catalog
    from streams.settings import get_settings

    settings = settings_factory()
    env = {"OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "OMNISEG_TOPIC_PREFIX": settings.topic_prefix}
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        done = runner.invoke(catalog, ["import", str(EXAMPLE_CATALOG)], env=env)
        assert done.exit_code == 0, done.output
        assert f"{len(simulated_catalog())} products" in done.output
        listed = runner.invoke(catalog, ["list", "--limit", "3"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "P0001" in listed.output and "ean:" in listed.output and "not shown" in listed.output
        bad = tmp_path / "bad.csv"
        bad.write_text("product_id,colour\nP1,red\n")
        failed = runner.invoke(catalog, ["import", str(bad)], env=env)
        assert failed.exit_code == 2
        assert "unknown column(s) 'colour'" in failed.output and "Traceback" not in failed.output
    finally:
        get_settings.cache_clear()


# --- ClickHouse ------------------------------------------------------------------------------------

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_T1 = datetime(2026, 1, 2, tzinfo=UTC)
_PRODUCTS = [
    Product("P1", category="shoes", web_skus=("SKU-1",), app_product_ids=("app-1",), eans=("4006381333931",)),
    Product("P2", category="home", eans=("012345678905",)),
    Product("P3", category="gone", web_skus=("SKU-3",)),
]
# (message_id, channel, sku, ean, app id) lines -> the product each must map to
_LINES = [
    ("w1", "web", "SKU-1", "", "", "P1"),
    ("w2", "web", "P2", "", "", "P2"),  # the product id sent as SKU
    ("a1", "app", "", "", "app-1", "P1"),
    ("s1", "store", "", "04006381333931", "", "P1"),  # GTIN-14 spelling of P1's EAN-13
    ("s2", "store", "", "0012-3456-78905", "", "P2"),  # EAN-13 of a UPC-A, with separators
    ("s3", "store", "", "999", "", ""),  # unknown
    ("w3", "web", "SKU-3", "", "", ""),  # P3 is deleted
]


def _product_inserts() -> list[tuple[str, dict[str, list[object]]]]:
    live = product_rows(_PRODUCTS, updated_at=_T0)
    deleted = product_rows([_PRODUCTS[2].to_avro(_T1, deleted=True)])
    return [("live", live), ("deleted", deleted)]


def _check_views(rows: Callable[[str], list[tuple[object, ...]]]) -> None:
    ids = {(str(kind), str(key)): str(pid) for kind, _id, key, pid in rows("SELECT * FROM product_ids")}
    assert ids == {
        ("web_sku", "SKU-1"): "P1",
        ("web_sku", "P1"): "P1",
        ("app_product_id", "app-1"): "P1",
        ("ean", "04006381333931"): "P1",
        ("web_sku", "P2"): "P2",
        ("ean", "00012345678905"): "P2",
    }
    enriched = {str(r[0]): str(r[-1]) for r in rows(ENRICHED_LINES_SQL)}
    assert enriched == {m: pid for m, _c, _s, _e, _a, pid in _LINES}


def _event_values() -> str:
    return ", ".join(
        f"('{m}', 'track', '{c}', 'Order Completed', toDateTime('2026-01-03 00:00:00'), "
        f"['{s}'], ['{e}'], ['{a}'], [1])"
        for m, c, s, e, a, _ in _LINES
    )


_EVENT_INSERT = (
    "INSERT INTO events (message_id, type, channel, event, timestamp, line_sku, line_ean, "
    "line_app_product_id, line_quantity) VALUES "
)


def test_products_table_and_views_on_clickhouse_18(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    assert client.execute("SELECT version() LIKE '18.%'")[0][0] == 1
    for _, columns in _product_inserts():
        client.execute(
            f"INSERT INTO products ({', '.join(PRODUCT_COLUMNS)}) VALUES",
            [columns[name] for name in PRODUCT_COLUMNS],
            columnar=True,
        )
    client.execute(
        _EVENT_INSERT,
        [(m, "track", c, "Order Completed", _T1, [s], [e], [a], [1.0]) for m, c, s, e, a, _ in _LINES],
    )
    _check_views(lambda sql: client.execute(sql))
    newest = client.execute("SELECT product_id, deleted, updated_at FROM products FINAL ORDER BY product_id")
    assert [(r[0], r[1]) for r in newest] == [("P1", 0), ("P2", 0), ("P3", 1)]


def test_products_table_and_views_on_modern_clickhouse_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "catalog_test")
    try:
        migrations.apply(backend, "catalog_test")
        for _, columns in _product_inserts():
            values = []
            for row in zip(*(columns[name] for name in PRODUCT_COLUMNS), strict=True):
                cells = [
                    "NULL" if v is None else str(v) if isinstance(v, int | float) else repr(v) for v in row
                ]
                cells[-1] = f"toDateTime({row[-1]}, 'UTC')"
                values.append(f"({', '.join(cells)})")
            backend.execute(f"INSERT INTO products ({', '.join(PRODUCT_COLUMNS)}) VALUES {', '.join(values)}")
        backend.execute(_EVENT_INSERT + _event_values())
        _check_views(backend.rows)
    finally:
        backend.close()
