"""Identity state on local disk: RocksDB tables with a bounded cache of decoded entries in front.

The resolver's replica of ``identity.assignments`` and the link writer's graph live here when
``state_dir`` is set (docs/state.md, "Identity state on disk"). A store is a cache of its changelog
topics, never the only copy: deleting its directory costs a full read of the topics, nothing else.

- :class:`CachedTable` is a ``MutableMapping`` over one key prefix of a store. Reads go through an LRU
  cache of at most ``capacity`` entries (misses are cached too, as absent); writes wait in ``pending``
  until :meth:`IdentifierStore.flush` puts every table's writes and the store's checkpoint in one RocksDB
  write batch, or :meth:`IdentifierStore.discard` drops them. The cache only ever holds what is on
  disk, so dropping the pending writes of an aborted transaction leaves nothing of it behind.
- :class:`IdentifierStore` is one RocksDB directory with named tables and a few meta values (the
  checkpoint). :func:`open_slot` picks the directory: the first of ``<stage>/<group>/slot-N`` that no
  other process holds, so several workers on one host each get their own.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from streams.domain.identity import PersonRecord
from streams.state.rocks import Rdict, batch, open_free_slot, open_store

log = logging.getLogger("streams.state.identifiers")

V = TypeVar("V")

_META = b"\x00"  # meta keys: before every table prefix
_COUNT = b"\x00n"  # + table prefix: the table's entry count
_ABSENT: Any = object()  # a cached miss
_DELETED: Any = object()  # a pending delete


class Codec(Generic[V]):
    """How a table's values become bytes and back."""

    def __init__(self, encode: Callable[[V], bytes], decode: Callable[[bytes], V]) -> None:
        self.encode = encode
        self.decode = decode


def _encode_person(record: PersonRecord) -> bytes:
    return struct.pack(">q", record.first_seen_ms) + (record.merged_into or "").encode()


def _decode_person(raw: bytes) -> PersonRecord:
    merged = raw[8:].decode()
    return PersonRecord(struct.unpack(">q", raw[:8])[0], merged or None)


TEXT: Codec[str] = Codec(str.encode, bytes.decode)
INT: Codec[int] = Codec(lambda v: struct.pack(">q", v), lambda raw: struct.unpack(">q", raw)[0])
KEYS: Codec[list[str]] = Codec(lambda v: json.dumps(v, separators=(",", ":")).encode(), json.loads)
PERSON: Codec[PersonRecord] = Codec(_encode_person, _decode_person)
EMPTY: Codec[bool] = Codec(lambda _v: b"", lambda _raw: True)


class CachedTable(MutableMapping[str, V]):
    """One table of an :class:`IdentifierStore`: str keys under a one-byte prefix, a bounded cache.

    ``len()`` is kept as a counter in the store (a write checks whether its key existed). A value read
    from the table may be mutated in place only if it is written back at once: the write takes it out of
    the cache, so the cache never holds a value that is not on disk.
    """

    def __init__(self, store: IdentifierStore, prefix: bytes, codec: Codec[V], capacity: int) -> None:
        self._db = store.db
        self._prefix = prefix
        self._codec = codec
        self.capacity = capacity
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.pending: dict[str, Any] = {}
        raw = self._db.get(_COUNT + prefix)
        self._count = struct.unpack(">q", raw)[0] if raw is not None else 0
        self._pending_count = self._count
        self.disk_reads = 0

    # -- reads --------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        value = self.pending.get(key, _ABSENT)
        if value is not _ABSENT:
            return default if value is _DELETED else value
        cache = self.cache
        value = cache.get(key, _DELETED)
        if value is _DELETED:
            value = self._load(key)
        else:
            cache.move_to_end(key)
        return default if value is _ABSENT else value

    def _load(self, key: str) -> Any:
        self.disk_reads += 1
        raw = self._db.get(self._prefix + key.encode())
        value = _ABSENT if raw is None else self._codec.decode(raw)
        cache = self.cache
        cache[key] = value
        if len(cache) > self.capacity:
            cache.popitem(last=False)
        return value

    def __getitem__(self, key: str) -> V:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _ABSENT) is not _ABSENT

    def __len__(self) -> int:
        return self._pending_count

    def __iter__(self) -> Iterator[str]:
        """Every key, pending writes included (a scan of the table on disk)."""
        pending = self.pending
        prefix = self._prefix
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            raw_key: bytes = it.key()
            if not raw_key.startswith(prefix):
                break
            key = raw_key[1:].decode()
            if key not in pending:
                yield key
            it.next()
        for key, value in list(pending.items()):
            if value is not _DELETED:
                yield key

    # -- writes -------------------------------------------------------------------------------------

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self:
            self._pending_count += 1
        self.pending[key] = value
        self.cache.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending_count -= 1
        self.pending[key] = _DELETED
        self.cache.pop(key, None)

    def pop(self, key: str, default: Any = _DELETED) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            if default is _DELETED:
                raise KeyError(key)
            return default
        del self[key]
        return value

    def write_to(self, wb: Any) -> int:
        """Put the pending writes and the count into ``wb``; returns how many."""
        prefix, encode = self._prefix, self._codec.encode
        for key, value in self.pending.items():
            if value is _DELETED:
                wb.delete(prefix + key.encode())
            else:
                wb.put(prefix + key.encode(), encode(value))
        if self._pending_count != self._count:
            wb.put(_COUNT + prefix, struct.pack(">q", self._pending_count))
        return len(self.pending)

    def written(self) -> None:
        """The pending writes are on disk: forget them (the cache fills again on reads)."""
        self.pending = {}
        self._count = self._pending_count

    def discard(self) -> None:
        """Drop the pending writes (their transaction did not commit)."""
        self.pending = {}
        self._pending_count = self._count

    def in_memory(self) -> int:
        """Decoded entries held: the cache and the pending writes."""
        return len(self.cache) + len(self.pending)


class IdentifierStore:
    """A RocksDB directory holding named :class:`CachedTable` s and meta values (the checkpoint)."""

    def __init__(self, path: Path, db: Rdict) -> None:
        self.path = path
        self.db = db
        self.tables: list[CachedTable[Any]] = []
        self._meta: dict[str, Any] = {}

    def table(self, prefix: bytes, codec: Codec[V], capacity: int) -> CachedTable[V]:
        if len(prefix) != 1 or prefix == _META:
            raise ValueError(f"table prefix must be one byte other than {_META!r}, got {prefix!r}")
        table = CachedTable(self, prefix, codec, capacity)
        self.tables.append(table)
        return table

    def meta(self, name: str) -> Any:
        """A meta value as last flushed (JSON), or None."""
        raw = self.db.get(_META + b"m" + name.encode())
        return None if raw is None else json.loads(raw)

    def set_meta(self, name: str, value: Any) -> None:
        """Write ``value`` with the next flush."""
        self._meta[name] = value

    def flush(self) -> int:
        """Write every table's pending writes and the pending meta values in one batch; returns the
        number of entries written."""
        wb = batch()
        written = sum(table.write_to(wb) for table in self.tables)
        for name, value in self._meta.items():
            wb.put(_META + b"m" + name.encode(), json.dumps(value, separators=(",", ":")).encode())
        if written or self._meta:
            self.db.write(wb)
        for table in self.tables:
            table.written()
        self._meta = {}
        return written

    def discard(self) -> None:
        for table in self.tables:
            table.discard()
        self._meta = {}

    def pending(self) -> int:
        return sum(len(table.pending) for table in self.tables)

    def in_memory(self) -> int:
        return sum(table.in_memory() for table in self.tables)

    def close(self) -> None:
        self.db.close()


def open_slot(state_dir: Path, stage: str, group: str) -> IdentifierStore:
    """Open the first store directory of ``stage`` and ``group`` that no other process holds
    (:func:`streams.state.rocks.open_free_slot`)."""
    path, db = open_free_slot(state_dir, stage, group)
    return IdentifierStore(path, db)


def wipe(store: IdentifierStore) -> IdentifierStore:
    """Delete everything in ``store`` (its topics were recreated or compacted past it) and reopen it."""
    path = store.path
    store.close()
    shutil.rmtree(path)
    log.info("identity state: %s wiped; it is read again from its topics", path)
    return IdentifierStore(path, open_store(path))


class StoredLinkTables:
    """The link writer's tables (``streams.domain.resolution.LinkStorage``) in one store, with
    ``capacity`` decoded entries in memory in all (split by how often each table is read)."""

    def __init__(self, store: IdentifierStore, capacity: int) -> None:
        self.store = store
        self.owner = store.table(b"o", TEXT, max(1, capacity // 2))
        self.members = store.table(b"m", KEYS, max(1, capacity // 4))
        self.persons = store.table(b"p", PERSON, max(1, capacity // 8))
        self.first_seen = store.table(b"f", INT, max(1, capacity // 16))
        self.lineage = store.table(b"l", KEYS, max(1, capacity // 16))
        # Suppression keys are few (erased identifiers) and kept in memory by the writer as well.
        self.suppressions = store.table(b"s", EMPTY, 1)
