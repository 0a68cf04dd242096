"""RocksDB (through ``rocksdict``) for keyed state on local disk: one opener, one place for its tuning.

Keys and values are bytes (raw mode). A store is a cache of a changelog topic, never the only copy:
deleting its directory costs a full restore from the changelog, nothing else (docs/state.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from rocksdict import DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

__all__ = ["Rdict", "WriteBatch", "batch", "open_free_slot", "open_store", "store_path"]

# Block cache and memtables: RocksDB's own memory, outside the Python heap and on top of the stage's
# cache of decoded entries. Small, because the decoded cache is what saves work.
_BLOCK_CACHE_BYTES = 64 << 20
_WRITE_BUFFER_BYTES = 32 << 20


def store_path(state_dir: Path, stage: str, group: str) -> Path:
    """The directory of one stage's store: per stage and consumer group, so two groups (two pipelines
    on one host) never share one."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", group)
    return state_dir / stage / safe


def open_store(path: Path) -> Rdict:
    """Open (create) the store at ``path``; one process at a time (RocksDB locks the directory)."""
    path.mkdir(parents=True, exist_ok=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(DBCompressionType.lz4())
    options.set_write_buffer_size(_WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(3)
    options.optimize_for_point_lookup(_BLOCK_CACHE_BYTES >> 20)  # MB
    options.increase_parallelism(2)
    try:
        db = Rdict(str(path), options)
    except Exception as exc:  # rocksdict raises plain Exception for a locked or unreadable store
        raise RuntimeError(f"cannot open the state store {path}: {exc}") from exc
    # No write-ahead log: the changelog is the durable copy. After a crash the store comes back as of
    # its last flushed memtable, a prefix of its write batches, so each batch's entries and the
    # position written with them stay together; the restore reads the changelog from that position.
    write = WriteOptions()
    setattr(write, "disable_wal", True)  # a property at run time (the stub says a method)  # noqa: B010
    db.set_write_options(write)
    return db


_MAX_SLOTS = 64


def open_free_slot(state_dir: Path, stage: str, group: str) -> tuple[Path, Rdict]:
    """Open the first store directory ``<stage>/<group>/slot-N`` that no other process holds.

    A store is a cache of topics whose every record it checks against them when it opens, so any free
    slot is right for any worker: several workers on one host share one state directory, and a worker
    restarted alone takes its old slot back (and reads only what changed since).
    """
    base = store_path(state_dir, stage, group)
    for n in range(_MAX_SLOTS):
        path = base / f"slot-{n}"
        try:
            return path, open_store(path)
        except RuntimeError as exc:
            if "lock" not in str(exc).lower():
                raise
    raise RuntimeError(f"all {_MAX_SLOTS} state slots under {base} are held by other processes")


def batch() -> WriteBatch:
    return WriteBatch(raw_mode=True)
