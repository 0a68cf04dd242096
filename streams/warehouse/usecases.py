"""The registry of use cases in ClickHouse (``usecase_registrations``): pre-registration and its rules.

Starting a use case stores its registered fields (streams/domain/experiments/usecases.py) with their
checksum and the start time; this is the pre-registration a report is bound to. The rules:

- a use case never started, or whose newest version was stopped, starts a new version;
- a running use case started again with the same registered fields is left as it is;
- a running use case started with any registered field changed is refused, naming the fields, unless
  ``new_version`` is given: then the running version stops and the next one starts, a new analysis
  period.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.domain.experiments.assignment import RunningUseCase
from streams.domain.experiments.usecases import UseCase
from streams.warehouse.sql_text import Rows, integer, quote


class RegistrationError(ValueError):
    """A use case cannot be started, stopped or reported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Registration:
    usecase_id: str
    version: int
    checksum: str
    registration: dict[str, Any]  # the registered fields as they were at the start
    definition: str  # the whole definition as JSON, for the record
    started_at: datetime
    stopped_at: datetime | None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def usecase(self) -> UseCase:
        """The use case as registered (the definition stored at the start)."""
        return UseCase.model_validate_json(self.definition)

    def running_usecase(self) -> RunningUseCase:
        """What the audience layer needs of it."""
        usecase = self.usecase()
        return RunningUseCase(
            self.usecase_id,
            self.version,
            usecase.audience.segment,
            usecase.audience.subject,
            usecase.control_share,
        )


_COLUMNS = (
    "usecase_id, version, checksum, registration, definition, started_at, stopped_at, stopped, revision"
)


def _row(row: tuple[Any, ...]) -> Registration:
    usecase_id, version, checksum, registration, definition, started_at, stopped_at, stopped = row[:8]
    return Registration(
        usecase_id=str(usecase_id),
        version=int(version),
        checksum=str(checksum),
        registration=json.loads(registration),
        definition=str(definition),
        started_at=datetime.fromtimestamp(int(started_at), UTC),
        stopped_at=datetime.fromtimestamp(int(stopped_at), UTC) if int(stopped) else None,
    )


def registrations(rows: Rows, usecase_id: str | None = None) -> list[Registration]:
    """Every version's current row (newest revision), by use case and version."""
    where = f"WHERE usecase_id = {quote(usecase_id)}" if usecase_id is not None else ""
    sql = f"""
        SELECT usecase_id, version,
               argMax(checksum, revision), argMax(registration, revision), argMax(definition, revision),
               toUInt32(argMax(started_at, revision)), toUInt32(argMax(stopped_at, revision)),
               argMax(stopped, revision)
        FROM usecase_registrations {where}
        GROUP BY usecase_id, version
        ORDER BY usecase_id, version"""
    return [_row(tuple(row)) for row in rows(sql)]


def latest(rows: Rows, usecase_id: str) -> Registration | None:
    found = registrations(rows, usecase_id)
    return found[-1] if found else None


def _insert_sql(reg: Registration, revision: int) -> str:
    stopped_at = reg.stopped_at or datetime.fromtimestamp(0, UTC)
    values = ", ".join(
        [
            quote(reg.usecase_id),
            integer(reg.version),
            quote(reg.checksum),
            quote(json.dumps(reg.registration, sort_keys=True, separators=(",", ":"))),
            quote(reg.definition),
            f"toDateTime({int(reg.started_at.timestamp())})",
            f"toDateTime({int(stopped_at.timestamp())})",
            "1" if reg.stopped_at is not None else "0",
            integer(revision),
        ]
    )
    # INSERT ... SELECT: clickhouse-driver waits for a data block after an INSERT ... VALUES without
    # data, and chDB takes no data argument; a SELECT of literals works on both.
    return f"INSERT INTO usecase_registrations ({_COLUMNS}) SELECT {values}"


@dataclass(frozen=True)
class StartOutcome:
    registration: Registration
    started: bool  # False: it was already running with these registered fields
    stopped: Registration | None  # the version a --new-version start stopped


def start(
    rows: Rows, execute: Rows, usecase: UseCase, *, new_version: bool = False, now: datetime | None = None
) -> StartOutcome:
    """Register ``usecase`` as running (see the module's rules); ``execute`` runs the INSERTs."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    current = latest(rows, usecase.id)
    stopped: Registration | None = None
    if current is not None and current.running:
        if current.checksum == usecase.checksum():
            return StartOutcome(current, started=False, stopped=None)
        if not new_version:
            changed = usecase.changed_fields(current.registration)
            raise RegistrationError(
                f"use case {usecase.id!r} version {current.version} is running since "
                f"{current.started_at:%Y-%m-%d %H:%M} UTC and its registered fields cannot change "
                f"(changed: {', '.join(changed)}); to start a new analysis period run "
                f"`omniseg usecases start {usecase.id} --new-version` (stops version {current.version})"
            )
        stopped = stop(rows, execute, usecase.id, now=now)
    version = 1 if current is None else current.version + 1
    registration = Registration(
        usecase_id=usecase.id,
        version=version,
        checksum=usecase.checksum(),
        registration=usecase.registration(),
        definition=usecase.model_dump_json(),
        started_at=now,
        stopped_at=None,
    )
    execute(_insert_sql(registration, _revision()))
    return StartOutcome(registration, started=True, stopped=stopped)


def stop(rows: Rows, execute: Rows, usecase_id: str, *, now: datetime | None = None) -> Registration:
    """Stop the running version of ``usecase_id``; its exposures end at ``now``."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    current = latest(rows, usecase_id)
    if current is None:
        raise RegistrationError(f"use case {usecase_id!r} was never started")
    if not current.running:
        raise RegistrationError(
            f"use case {usecase_id!r} version {current.version} is already stopped "
            f"(at {current.stopped_at:%Y-%m-%d %H:%M} UTC)"
        )
    stopped = Registration(**{**current.__dict__, "stopped_at": max(now, current.started_at)})
    execute(_insert_sql(stopped, _revision()))
    return stopped


_last_revision = 0


def _revision() -> int:
    """Milliseconds, strictly increasing within this process (two writes in one millisecond still
    order)."""
    global _last_revision
    _last_revision = max(_last_revision + 1, time.time_ns() // 1_000_000)
    return _last_revision


def running(rows: Rows) -> tuple[RunningUseCase, ...]:
    """Every running version, as the audience layer needs it, sorted by use case id."""
    latest_of: dict[str, Registration] = {}
    for reg in registrations(rows):
        latest_of[reg.usecase_id] = reg  # ordered by version: the last is the newest
    return tuple(reg.running_usecase() for _, reg in sorted(latest_of.items()) if reg.running)
