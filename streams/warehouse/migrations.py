"""Numbered ClickHouse migrations (``deploy/clickhouse/NNNN_name.sql``) and the runner that applies them.

Every migration must run on ClickHouse 18.16 (the local server) and on a current ClickHouse (checked
with chDB). The runner records what it applied, with a checksum, in ``schema_migrations``; editing a
migration after it was applied is an error, not a silent drift. ``max_migration.txt`` names the newest
number so that two branches adding the same number conflict in git.

With a cluster (:class:`~streams.warehouse.cluster.ClusterSpec`), every statement runs in its
``ON CLUSTER`` form (:func:`streams.warehouse.cluster.translate`): replicated ``_local`` tables on
every node with Distributed tables in front, and ``schema_migrations`` replicated too, so every node
knows what was applied.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streams.warehouse import cluster as clustering
from streams.warehouse.cluster import ClusterSpec

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "deploy" / "clickhouse"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MigrationError(RuntimeError):
    """A migration could not be found, checked or applied; the message says which and why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """The statements, split on ``;`` at end of line (migrations put no ``;`` inside literals)."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.strip().startswith("--"))
        return [part.strip() for part in re.split(r";\s*$", text, flags=re.M) if part.strip()]


class Backend(Protocol):
    def execute(self, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...

    def record(self, database: str, migration: Migration, table: str = "schema_migrations") -> None: ...


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in order; checks that numbers are 1..N without gaps and match max_migration.txt."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.path.name}: expected migration number {expected:04d} (numbers run 1..N, no gaps)"
            )
    max_file = directory / "max_migration.txt"
    if found and max_file.exists() and int(max_file.read_text().strip()) != found[-1].version:
        raise MigrationError(
            f"{max_file} says {max_file.read_text().strip()} but the newest migration is "
            f"{found[-1].version:04d}; update it"
        )
    return found


def check_identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise MigrationError(f"database name {name!r} must match {_IDENT.pattern}")
    return name


_SCHEMA_MIGRATIONS = (
    "(version UInt32, name String, checksum String, applied_at DateTime DEFAULT now()) "
    "ENGINE = MergeTree ORDER BY version"
)


def apply(
    backend: Backend,
    database: str,
    migrations: Sequence[Migration] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    cluster: ClusterSpec | None = None,
) -> list[Migration]:
    """Create ``database`` if needed and apply the migrations it lacks, in order. Returns those applied.

    With ``cluster``, every statement runs in its cluster form on every node (see the module doc)."""
    database = check_identifier(database)
    migrations = discover() if migrations is None else migrations
    record_table = "schema_migrations"
    if cluster is None:
        backend.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        backend.execute(f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations {_SCHEMA_MIGRATIONS}")
    else:
        if cluster.database != database:
            raise MigrationError(f"cluster spec is for {cluster.database}, not {database}")
        shards = backend.rows(
            f"SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = '{cluster.name}'"
        )
        try:
            clustering.check_one_shard(int(shards[0][0]) if shards else 0, cluster.name)
        except clustering.ClusterTranslationError as exc:
            raise MigrationError(str(exc)) from exc
        backend.execute(f"CREATE DATABASE IF NOT EXISTS {database} {cluster.on_cluster}")
        create = f"CREATE TABLE IF NOT EXISTS schema_migrations {_SCHEMA_MIGRATIONS}"
        for statement in clustering.translate(create, cluster):
            backend.execute(statement)
        record_table = clustering.local_name("schema_migrations")
        # Read what this node's replica holds once it has every part the others wrote.
        backend.execute(f"SYSTEM SYNC REPLICA {database}.{record_table}")
    applied = {
        int(version): (name, checksum)
        for version, name, checksum in backend.rows(
            f"SELECT version, name, checksum FROM {database}.{record_table}"
        )
    }
    done: list[Migration] = []
    for migration in migrations:
        if migration.version in applied:
            _, checksum = applied[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"{migration.path.name} changed after it was applied to {database} "
                    f"(checksum {checksum} -> {migration.checksum}); add a new migration instead"
                )
            continue
        progress(
            f"applying {migration.path.name} to {database}"
            + (f" on cluster {cluster.name}" if cluster else "")
        )
        for statement in migration.statements():
            try:
                for step in [statement] if cluster is None else clustering.translate(statement, cluster):
                    backend.execute(step)
            except Exception as exc:
                raise MigrationError(
                    f"{migration.path.name} failed on {database}: {exc}\nstatement:\n{statement}"
                ) from exc
        backend.record(database, migration, record_table)
        done.append(migration)
    return done


class ClickHouseBackend:
    """A ClickHouse server over the native protocol; statements run in ``database``."""

    def __init__(self, client_factory: Callable[[str], Any], database: str) -> None:
        self._factory = client_factory
        self._database = database
        self._client: Any = None

    def _ensure(self) -> Any:
        if self._client is None:
            bootstrap = self._factory("default")
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {check_identifier(self._database)}")
            bootstrap.disconnect()
            self._client = self._factory(self._database)
        return self._client

    def execute(self, sql: str) -> None:
        self._ensure().execute(sql)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self._ensure().execute(sql))

    def record(self, database: str, migration: Migration, table: str = "schema_migrations") -> None:
        self._ensure().execute(
            f"INSERT INTO {database}.{table} (version, name, checksum) VALUES",
            [(migration.version, migration.name, migration.checksum)],
        )


_TSV_ESCAPE = re.compile(r"\\(.)")
_TSV_CHARS = {"b": "\b", "f": "\f", "r": "\r", "n": "\n", "t": "\t", "0": "\0"}


def _unescape(cell: str) -> str:
    """A TabSeparated cell's text: ``\\n``, ``\\t``, ``\\\\``, ``\\'`` and the like undone. A cell that is
    ``\\N`` alone is NULL and stays as it is, for the caller to tell from text."""
    if cell == "\\N":
        return cell
    return _TSV_ESCAPE.sub(lambda m: _TSV_CHARS.get(m.group(1), m.group(1)), cell) if "\\" in cell else cell


class ChdbBackend:
    """chDB (ClickHouse as a library): proves migrations run on a current ClickHouse."""

    def __init__(self, path: str | None = None, database: str = "default") -> None:
        import chdb.session

        factory: Any = chdb.session.Session
        self._session: Any = factory(path) if path else factory()
        self._database = database

    def execute(self, sql: str) -> None:
        self._session.query(sql)
        if sql.lstrip().upper().startswith("CREATE DATABASE"):
            # Unqualified table names in migrations resolve to the target database.
            self._session.query(f"USE {check_identifier(self._database)}")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        result = self._session.query(sql, "TabSeparated")
        text = result.bytes().decode()
        return [tuple(_unescape(cell) for cell in line.split("\t")) for line in text.splitlines() if line]

    def record(self, database: str, migration: Migration, table: str = "schema_migrations") -> None:
        # name and checksum are [a-z0-9_] by construction, so inlining them is safe.
        self.execute(
            f"INSERT INTO {database}.{table} (version, name, checksum) "
            f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}')"
        )

    def close(self) -> None:
        self._session.close()
