"""Migrations on a ClickHouse cluster: each migration statement rewritten for one shard of N replicas.

With ``OMNISEG_CLICKHOUSE_CLUSTER`` set, the migration runner passes every statement of
``deploy/clickhouse`` through :func:`translate` (a pure function of the statement text) and runs what
it returns. Every table ``t`` of a migration becomes two tables on every node of the cluster:

- ``t_local``: the data, in the replicated form of the migration's engine
  (``ReplacingMergeTree(v)`` -> ``ReplicatedReplacingMergeTree('<zookeeper path>/<db>/t_local',
  '{replica}', v)``), same columns, keys and partitioning;
- ``t``: a ``Distributed`` table over ``t_local``, under the name every query uses.

What is rewritten, statement by statement (everything runs ``ON CLUSTER`` except INSERT):

- ``CREATE TABLE t (...) ENGINE = XMergeTree...`` -> ``t_local`` (replicated) and ``t`` (Distributed).
- ``CREATE VIEW v AS SELECT ...`` -> the same view on every node, with every table it reads
  qualified by the database (a distributed DDL runs on the other nodes in their default database).
- ``ALTER TABLE t ...`` -> the ALTER on ``t_local``; after a column change, ``t`` is created again
  from ``t_local`` (ClickHouse does not ALTER a Distributed table over replicated shards).
- ``RENAME TABLE a TO b, ...`` -> the ``_local`` tables are renamed; the Distributed tables of the
  old names are dropped and created again for the new names (a Distributed table names its target).
- ``DROP TABLE [IF EXISTS] x`` -> drops ``x`` and, if there is one, ``x_local``.
- ``INSERT INTO t ...`` -> ``INSERT INTO db.t_local ...``, once, on the node the runner is connected
  to; replication copies the rows to the other replicas. Writes always go to the replicated table:
  ClickHouse 18.16 refuses an INSERT into a Distributed table whose target has a MATERIALIZED column.

Anything else (materialized views, engines outside the MergeTree family, qualified names, OPTIMIZE,
...) raises :class:`ClusterTranslationError` rather than run half-right. A view's SELECT names its
tables after FROM and JOIN; a FROM inside a function call (``extract(x FROM y)``) is not supported.

One shard only: the Distributed tables have no sharding key, so ClickHouse itself refuses an INSERT
into one over several shards, and the runner checks the shard count (:func:`check_one_shard`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

LOCAL_SUFFIX = "_local"
DEFAULT_ZOOKEEPER_PATH = "/clickhouse/tables/{shard}"


class ClusterTranslationError(ValueError):
    """A migration statement has no cluster form; the message names the statement."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where the tables go: the cluster's name (``remote_servers``), the database, the ZooKeeper path."""

    name: str
    database: str
    zookeeper_path: str = DEFAULT_ZOOKEEPER_PATH

    def __post_init__(self) -> None:
        for value, what in ((self.name, "cluster name"), (self.database, "database name")):
            if not _IDENT.match(value):
                raise ClusterTranslationError(f"{what} {value!r} must match {_IDENT.pattern}")
        if not self.zookeeper_path.startswith("/") or "'" in self.zookeeper_path:
            raise ClusterTranslationError(
                f"ZooKeeper path {self.zookeeper_path!r} must start with / and hold no quote"
            )

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER {self.name}"

    def distributed(self, table: str) -> str:
        """The Distributed table ``table`` over ``table_local`` on every node."""
        db = self.database
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{table} {self.on_cluster} AS {db}.{local_name(table)} "
            f"ENGINE = Distributed({self.name}, {db}, {local_name(table)})"
        )


class _ClusterSettings(Protocol):
    @property
    def clickhouse_cluster(self) -> str: ...

    @property
    def clickhouse_database(self) -> str: ...

    @property
    def clickhouse_zookeeper_path(self) -> str: ...


def cluster_spec(settings: _ClusterSettings) -> ClusterSpec | None:
    """The cluster the settings name (``OMNISEG_CLICKHOUSE_CLUSTER``), or None for one plain server."""
    if not settings.clickhouse_cluster:
        return None
    return ClusterSpec(
        settings.clickhouse_cluster, settings.clickhouse_database, settings.clickhouse_zookeeper_path
    )


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_CREATE_TABLE = re.compile(rf"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s*\(", re.I)
_ENGINE = re.compile(r"^\s*ENGINE\s*=\s*([A-Za-z]+)\s*", re.I)
_CREATE_VIEW = re.compile(rf"^CREATE\s+VIEW\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+AS\s+(.*)$", re.I | re.S)
_DROP = re.compile(rf"^DROP\s+TABLE\s+(IF\s+EXISTS\s+)?{_NAME}\s*$", re.I)
_RENAME = re.compile(r"^RENAME\s+TABLE\s+(.*)$", re.I | re.S)
_RENAME_PAIR = re.compile(rf"^\s*{_NAME}\s+TO\s+{_NAME}\s*$", re.I)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+{_NAME}\s+(.*)$", re.I | re.S)
_COLUMN_CHANGE = re.compile(r"\b(ADD|DROP|MODIFY|CLEAR|COMMENT|RENAME)\s+COLUMN\b", re.I)
_INSERT = re.compile(rf"^INSERT\s+INTO\s+{_NAME}(\s*\(|\s+SELECT\b|\s+VALUES\b)(.*)$", re.I | re.S)


def local_name(table: str) -> str:
    """The replicated table behind the Distributed table ``table``."""
    return f"{table}{LOCAL_SUFFIX}"


def translate(statement: str, spec: ClusterSpec) -> list[str]:
    """The statements that do on the cluster what ``statement`` does on one server, in order."""
    text = statement.strip().rstrip(";").strip()
    head = " ".join(text.split()[:3]).upper()
    if head.startswith("CREATE TABLE"):
        return _create_table(text, spec)
    if head.startswith("CREATE VIEW"):
        return _create_view(text, spec)
    if head.startswith("ALTER TABLE"):
        return _alter(text, spec)
    if head.startswith("RENAME TABLE"):
        return _rename(text, spec)
    if head.startswith("DROP TABLE"):
        return _drop(text, spec)
    if head.startswith("INSERT INTO"):
        return _insert(text, spec)
    raise ClusterTranslationError(f"no cluster form for this statement: {_first_line(text)}")


def check_one_shard(shards: int, cluster: str) -> None:
    """The cluster layout omniseg supports: one shard (of any number of replicas)."""
    if shards == 0:
        raise ClusterTranslationError(
            f"the server knows no cluster {cluster!r} (system.clusters); check remote_servers in its config"
        )
    if shards != 1:
        raise ClusterTranslationError(
            f"cluster {cluster!r} has {shards} shards; omniseg supports one shard of several replicas "
            "(docs/clickhouse_cluster.md)"
        )


# -- the statement kinds ------------------------------------------------------------------------------


def _create_table(text: str, spec: ClusterSpec) -> list[str]:
    match = _CREATE_TABLE.match(text)
    if not match:
        raise ClusterTranslationError(f"unsupported CREATE TABLE form: {_first_line(text)}")
    if_not_exists, table = match.group(1) or "", _name(match.group(2))
    open_at = match.end() - 1
    close_at = _closing_paren(text, open_at)
    columns = text[open_at : close_at + 1]
    rest = text[close_at + 1 :]
    engine_match = _ENGINE.match(rest)
    if not engine_match:
        raise ClusterTranslationError(f"CREATE TABLE {table}: no ENGINE = after the columns")
    engine = engine_match.group(1)
    if not engine.endswith("MergeTree") or engine.startswith("Replicated"):
        raise ClusterTranslationError(
            f"CREATE TABLE {table}: engine {engine} has no replicated form (MergeTree family only)"
        )
    after_engine = rest[engine_match.end() :]
    args = ""
    if after_engine.startswith("("):
        args_close = _closing_paren(after_engine, 0)
        args = after_engine[1:args_close].strip()
        after_engine = after_engine[args_close + 1 :]
    local = local_name(table)
    path = f"{spec.zookeeper_path.rstrip('/')}/{spec.database}/{local}"
    replicated_args = ", ".join([f"'{path}'", "'{replica}'", *([args] if args else [])])
    tail = after_engine.strip()
    local_ddl = (
        f"CREATE TABLE {if_not_exists.upper()}{spec.database}.{local} {spec.on_cluster}\n{columns}\n"
        f"ENGINE = Replicated{engine}({replicated_args})" + (f"\n{tail}" if tail else "")
    )
    return [local_ddl, spec.distributed(table)]


def _create_view(text: str, spec: ClusterSpec) -> list[str]:
    if re.match(r"^CREATE\s+(MATERIALIZED|LIVE)\s+VIEW", text, re.I):
        raise ClusterTranslationError(f"no cluster form for a materialized view: {_first_line(text)}")
    match = _CREATE_VIEW.match(text)
    if not match:
        raise ClusterTranslationError(f"unsupported CREATE VIEW form: {_first_line(text)}")
    if_not_exists, view, select = match.group(1) or "", _name(match.group(2)), match.group(3)
    return [
        f"CREATE VIEW {if_not_exists.upper()}{spec.database}.{view} {spec.on_cluster} AS\n"
        f"{qualify_tables(select, spec.database)}"
    ]


def _alter(text: str, spec: ClusterSpec) -> list[str]:
    match = _ALTER.match(text)
    if not match:
        raise ClusterTranslationError(f"unsupported ALTER form: {_first_line(text)}")
    table, change = _name(match.group(1)), match.group(2)
    db = spec.database
    statements = [f"ALTER TABLE {db}.{local_name(table)} {spec.on_cluster} {change}"]
    if _COLUMN_CHANGE.search(_without_strings(change)):
        statements += [f"DROP TABLE IF EXISTS {db}.{table} {spec.on_cluster}", spec.distributed(table)]
    return statements


def _rename(text: str, spec: ClusterSpec) -> list[str]:
    match = _RENAME.match(text)
    pairs = []
    for part in (match.group(1) if match else "").split(","):
        pair = _RENAME_PAIR.match(part)
        if not pair:
            raise ClusterTranslationError(f"unsupported RENAME form: {_first_line(text)}")
        pairs.append((_name(pair.group(1)), _name(pair.group(2))))
    db, on = spec.database, spec.on_cluster
    renames = ", ".join(f"{db}.{local_name(a)} TO {db}.{local_name(b)}" for a, b in pairs)
    return [
        *(f"DROP TABLE IF EXISTS {db}.{source} {on}" for source, _ in pairs),
        f"RENAME TABLE {renames} {on}",
        *(spec.distributed(target) for _, target in pairs),
    ]


def _drop(text: str, spec: ClusterSpec) -> list[str]:
    match = _DROP.match(text)
    if not match:
        raise ClusterTranslationError(f"unsupported DROP form: {_first_line(text)}")
    if_exists, name = match.group(1) or "", _name(match.group(2))
    db, on = spec.database, spec.on_cluster
    return [
        f"DROP TABLE {if_exists.upper()}{db}.{name} {on}",
        f"DROP TABLE IF EXISTS {db}.{local_name(name)} {on}",
    ]


def _insert(text: str, spec: ClusterSpec) -> list[str]:
    match = _INSERT.match(text)
    if not match:
        raise ClusterTranslationError(f"unsupported INSERT form: {_first_line(text)}")
    table = _name(match.group(1))
    return [f"INSERT INTO {spec.database}.{local_name(table)}{match.group(2)}{match.group(3)}"]


# -- text helpers -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""'(?:[^'\\]|\\.)*'|`[^`]*`|"[^"]*"|[A-Za-z_][A-Za-z0-9_]*|\s+|.""",
    re.S,
)


def _tokens(sql: str) -> Iterator[str]:
    yield from (match.group(0) for match in _TOKEN.finditer(sql))


def qualify_tables(select: str, database: str) -> str:
    """``select`` with every table named after FROM or JOIN written as ``database.table``.

    A FROM or JOIN followed by ``(`` (a subquery), by a name followed by ``.`` (already qualified) or
    by ``(`` (a table function) is left alone, and so is ARRAY JOIN, which names columns."""
    tokens = list(_tokens(select))
    significant = [i for i, token in enumerate(tokens) if not token.isspace()]
    for position, index in enumerate(significant[:-1]):
        keyword = tokens[index].upper()
        if keyword not in ("FROM", "JOIN"):
            continue
        if keyword == "JOIN" and position > 0 and tokens[significant[position - 1]].upper() == "ARRAY":
            continue
        name_index = significant[position + 1]
        name = tokens[name_index]
        if not _IDENT.match(name) or name.upper() in ("SELECT", "WITH"):
            continue
        after = tokens[significant[position + 2]] if position + 2 < len(significant) else ""
        if after in (".", "("):
            continue
        tokens[name_index] = f"{database}.{name}"
    return "".join(tokens)


def _closing_paren(text: str, open_at: int) -> int:
    """The index of the ``)`` that closes the ``(`` at ``open_at``, skipping string literals."""
    depth = 0
    position = open_at
    for token in _tokens(text[open_at:]):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth == 0:
                return position
        position += len(token)
    raise ClusterTranslationError(f"unbalanced parentheses in: {_first_line(text)}")


def _without_strings(sql: str) -> str:
    return "".join("''" if token.startswith("'") else token for token in _tokens(sql))


def _name(name: str) -> str:
    if not _IDENT.match(name):
        raise ClusterTranslationError(f"table name {name!r} must match {_IDENT.pattern}")
    return name


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:120]
