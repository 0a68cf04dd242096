"""The cluster form of migration statements (streams/warehouse/cluster.py), on every existing migration
and on each statement kind."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from streams.settings import Settings
from streams.warehouse import migrations
from streams.warehouse.cluster import (
    ClusterSpec,
    ClusterTranslationError,
    check_one_shard,
    cluster_spec,
    qualify_tables,
    translate,
)

SPEC = ClusterSpec("c1", "omniseg")


def _all_statements() -> list[tuple[str, str]]:
    return [(m.path.name, s) for m in migrations.discover() for s in m.statements()]


def _created_names() -> set[str]:
    names = set()
    for _, statement in _all_statements():
        match = re.match(r"^CREATE\s+(?:TABLE|VIEW)\s+IF\s+NOT\s+EXISTS\s+(\w+)", statement)
        if match:
            names.add(match.group(1))
        for _, target in re.findall(
            r"(\w+)\s+TO\s+(\w+)", statement if statement.startswith("RENAME") else ""
        ):
            names.add(target)
    return names


@pytest.mark.parametrize(("migration", "statement"), _all_statements())
def test_every_migration_statement_has_a_cluster_form(migration: str, statement: str) -> None:
    out = translate(statement, SPEC)
    assert out, migration
    for step in out:
        if step.startswith("INSERT"):
            assert "ON CLUSTER" not in step.split("(")[0]
            assert step.startswith("INSERT INTO omniseg.") and "_local" in step.split("(")[0]
        else:
            assert " ON CLUSTER c1" in step, step
        assert not step.rstrip().endswith(";")


def test_every_table_is_replicated_local_with_a_distributed_front() -> None:
    for migration, statement in _all_statements():
        if not statement.startswith("CREATE TABLE"):
            continue
        local, front = translate(statement, SPEC)
        name = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement).group(1)  # type: ignore[union-attr]
        engine = re.search(r"ENGINE = (\w+)(\((.*?)\))?\s", statement + " ").group  # type: ignore[union-attr]
        path = f"'/clickhouse/tables/{{shard}}/omniseg/{name}_local', '{{replica}}'"
        args = f", {engine(3)}" if engine(3) else ""
        assert f"ENGINE = Replicated{engine(1)}({path}{args})" in local, migration
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS omniseg.{name}_local ON CLUSTER c1\n("), (
            migration
        )
        assert front == (
            f"CREATE TABLE IF NOT EXISTS omniseg.{name} ON CLUSTER c1 AS omniseg.{name}_local "
            f"ENGINE = Distributed(c1, omniseg, {name}_local)"
        )


def test_views_read_only_qualified_tables_the_migrations_create() -> None:
    created = _created_names()
    views = 0
    for _, statement in _all_statements():
        if not statement.startswith("CREATE VIEW"):
            continue
        (view,) = translate(statement, SPEC)
        views += 1
        for keyword, name in re.findall(r"(?<!ARRAY )\b(FROM|JOIN)\s+(?!\()([\w.]+)", view):
            assert name.startswith("omniseg."), (keyword, name, view[:80])
            assert name.removeprefix("omniseg.") in created, name
    assert views >= 10


def test_create_table_keeps_columns_keys_and_engine_arguments() -> None:
    local, _ = translate(
        "CREATE TABLE IF NOT EXISTS t\n(\n    a String DEFAULT 'x(y',\n    v UInt64\n)\n"
        "ENGINE = ReplacingMergeTree(v)\nPARTITION BY toYYYYMM(now())\nORDER BY (a, v)",
        SPEC,
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS omniseg.t_local ON CLUSTER c1\n(\n    a String DEFAULT 'x(y',\n"
        "    v UInt64\n)\nENGINE = ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{shard}/omniseg/t_local', '{replica}', v)\n"
        "PARTITION BY toYYYYMM(now())\nORDER BY (a, v)"
    )
    (plain, _) = translate("CREATE TABLE t (a String) ENGINE = MergeTree ORDER BY a", SPEC)
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/omniseg/t_local', '{replica}')\n" in plain
    )


def test_alter_of_columns_rebuilds_the_distributed_front() -> None:
    assert translate("ALTER TABLE events ADD COLUMN x UInt8 AFTER y", SPEC) == [
        "ALTER TABLE omniseg.events_local ON CLUSTER c1 ADD COLUMN x UInt8 AFTER y",
        "DROP TABLE IF EXISTS omniseg.events ON CLUSTER c1",
        "CREATE TABLE IF NOT EXISTS omniseg.events ON CLUSTER c1 AS omniseg.events_local "
        "ENGINE = Distributed(c1, omniseg, events_local)",
    ]
    assert translate("ALTER TABLE events DELETE WHERE note = 'ADD COLUMN'", SPEC) == [
        "ALTER TABLE omniseg.events_local ON CLUSTER c1 DELETE WHERE note = 'ADD COLUMN'"
    ]


def test_rename_moves_local_tables_and_rebuilds_fronts() -> None:
    assert translate("RENAME TABLE a TO a_old, a_new TO a", SPEC) == [
        "DROP TABLE IF EXISTS omniseg.a ON CLUSTER c1",
        "DROP TABLE IF EXISTS omniseg.a_new ON CLUSTER c1",
        "RENAME TABLE omniseg.a_local TO omniseg.a_old_local, "
        "omniseg.a_new_local TO omniseg.a_local ON CLUSTER c1",
        "CREATE TABLE IF NOT EXISTS omniseg.a_old ON CLUSTER c1 AS omniseg.a_old_local "
        "ENGINE = Distributed(c1, omniseg, a_old_local)",
        "CREATE TABLE IF NOT EXISTS omniseg.a ON CLUSTER c1 AS omniseg.a_local "
        "ENGINE = Distributed(c1, omniseg, a_local)",
    ]


def test_drop_keeps_if_exists_and_drops_a_local_table_too() -> None:
    assert translate("DROP TABLE old", SPEC) == [
        "DROP TABLE omniseg.old ON CLUSTER c1",
        "DROP TABLE IF EXISTS omniseg.old_local ON CLUSTER c1",
    ]
    assert translate("DROP TABLE IF EXISTS v", SPEC)[0] == "DROP TABLE IF EXISTS omniseg.v ON CLUSTER c1"


def test_insert_goes_to_the_local_table_once() -> None:
    assert translate("INSERT INTO t (a) SELECT a FROM s", SPEC) == [
        "INSERT INTO omniseg.t_local (a) SELECT a FROM s"
    ]


def test_qualify_tables_leaves_subqueries_functions_array_join_and_strings() -> None:
    sql = (
        "SELECT x FROM (SELECT x FROM t FINAL) ARRAY JOIN xs AS x "
        "ANY LEFT JOIN other.u USING x LEFT ARRAY JOIN ys AS y "
        "WHERE s = 'FROM t' AND x IN (SELECT x FROM numbers(3)) AND y NOT IN (SELECT y FROM v)"
    )
    assert qualify_tables(sql, "db") == (
        "SELECT x FROM (SELECT x FROM db.t FINAL) ARRAY JOIN xs AS x "
        "ANY LEFT JOIN other.u USING x LEFT ARRAY JOIN ys AS y "
        "WHERE s = 'FROM t' AND x IN (SELECT x FROM numbers(3)) AND y NOT IN (SELECT y FROM db.v)"
    )


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE MATERIALIZED VIEW mv TO t AS SELECT 1",
        "CREATE TABLE t (a String) ENGINE = Log",
        "CREATE TABLE t (a String) ENGINE = ReplicatedMergeTree('/p', '{replica}') ORDER BY a",
        "CREATE TABLE other.t (a String) ENGINE = MergeTree ORDER BY a",
        "OPTIMIZE TABLE t FINAL",
        "DROP TABLE other.t",
        "RENAME TABLE a TO other.b",
        "CREATE TABLE t (a String ENGINE = MergeTree ORDER BY a",
    ],
)
def test_statements_without_a_cluster_form_are_refused(statement: str) -> None:
    with pytest.raises(ClusterTranslationError):
        translate(statement, SPEC)


def test_spec_and_settings() -> None:
    assert cluster_spec(Settings()) is None
    spec = cluster_spec(Settings(clickhouse_cluster="main", clickhouse_database="shop"))
    assert spec == ClusterSpec("main", "shop", "/clickhouse/tables/{shard}")
    with pytest.raises(ValidationError):
        Settings(clickhouse_cluster="main; DROP")
    with pytest.raises(ClusterTranslationError):
        ClusterSpec("c1", "omniseg", "no/leading/slash")


def test_only_one_shard_is_accepted() -> None:
    check_one_shard(1, "c1")
    with pytest.raises(ClusterTranslationError, match="2 shards"):
        check_one_shard(2, "c1")
    with pytest.raises(ClusterTranslationError, match="knows no cluster"):
        check_one_shard(0, "c1")
