"""The cluster form of every migration on a current ClickHouse (chDB), which has no ZooKeeper and no
cluster.

What it proves, statement by statement of every migration's translation
(:func:`streams.warehouse.cluster.translate`):

1. the modern parser accepts it as written (``EXPLAIN AST``: ON CLUSTER, the replicated engines'
   arguments, the Distributed engine, qualified names, RENAME of several tables);
2. it runs in order once the cluster parts are taken out: ``ON CLUSTER`` removed, each replicated
   engine back to its plain engine with the migration's own arguments, each Distributed table as a
   ``Merge`` table over its ``_local`` table. So the ``_local`` tables' columns, keys and engine
   arguments, the sequences for ALTER, RENAME and DROP, the INSERT into ``_local`` and every view with
   its qualified tables run on a current ClickHouse, and leave the same names as the plain migrations.

What it does not prove: replication and distributed DDL themselves (test_cluster.py does, on 18.16).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator

import pytest

from streams.warehouse import migrations
from streams.warehouse.cluster import ClusterSpec, translate

pytestmark = pytest.mark.integration

SPEC = ClusterSpec("omniseg_cluster", "clustered")


def declustered(statement: str) -> str:
    """``statement`` without its cluster parts (see the module doc)."""
    text = statement.replace(f" {SPEC.on_cluster}", "")
    text = re.sub(r"ENGINE = Replicated(\w+)\('[^']*', '\{replica\}'(?:, )?", r"ENGINE = \1(", text)
    return re.sub(
        rf"ENGINE = Distributed\({SPEC.name}, {SPEC.database}, (\w+)\)",
        rf"ENGINE = Merge({SPEC.database}, '^\1$')",
        text,
    )


@pytest.fixture
def chdb() -> Iterator[migrations.ChdbBackend]:
    """One chDB session (one per process at a time) with the plain migrations in database ``plain``."""
    backend = migrations.ChdbBackend(tempfile.mkdtemp(prefix="omniseg-chdb-cluster-"), "plain")
    try:
        migrations.apply(backend, "plain")
        backend.execute(f"CREATE DATABASE IF NOT EXISTS {SPEC.database}")
        # Unqualified names (the INSERT ... SELECT of 0007) resolve where the runner would run them.
        backend.execute(f"USE {SPEC.database}")
        yield backend
    finally:
        backend.close()


def test_declustering_keeps_the_engine_arguments() -> None:
    out = translate("CREATE TABLE t (v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY v", SPEC)
    assert declustered(out[0]).endswith("ENGINE = ReplacingMergeTree(v)\nORDER BY v")
    assert declustered(out[1]) == (
        "CREATE TABLE IF NOT EXISTS clustered.t AS clustered.t_local ENGINE = Merge(clustered, '^t_local$')"
    )


def test_every_migration_in_cluster_form_parses_and_runs_on_chdb(chdb: migrations.ChdbBackend) -> None:
    for migration in migrations.discover():
        for statement in migration.statements():
            for step in translate(statement, SPEC):
                try:
                    chdb.execute(f"EXPLAIN AST {step}")
                    chdb.execute(declustered(step))
                except Exception as exc:
                    pytest.fail(f"{migration.path.name}: {exc}\nstatement:\n{step}", pytrace=False)

    plain = dict(chdb.rows("SELECT name, engine FROM system.tables WHERE database = 'plain'"))
    del plain["schema_migrations"]  # the runner's own table, not a migration's
    tables = dict(chdb.rows(f"SELECT name, engine FROM system.tables WHERE database = '{SPEC.database}'"))
    fronts = {name for name, engine in tables.items() if engine in ("Merge", "View")}
    assert fronts == set(plain)
    for name, engine in plain.items():
        if engine != "View":
            assert tables[name] == "Merge" and tables[f"{name}_local"] == engine, name

    # The views read through the fronts: a row written to events_local is one event in events_dedup.
    chdb.execute(
        f"INSERT INTO {SPEC.database}.events_local (message_id, type, channel, timestamp, received_at) "
        "VALUES ('m-1', 'track', 'web', '2026-12-04 09:00:00', '2026-12-04 09:00:00')"
    )
    chdb.execute(
        f"INSERT INTO {SPEC.database}.events_local (message_id, type, channel, timestamp, received_at) "
        "VALUES ('m-1', 'track', 'web', '2026-12-04 09:00:00', '2026-12-04 09:00:00')"
    )
    assert chdb.rows(f"SELECT count() FROM {SPEC.database}.events_dedup") == [("1",)]
    for name, engine in plain.items():
        if engine == "View":
            chdb.rows(f"SELECT count() FROM {SPEC.database}.{name}")
