"""``/v1/usecases``: the registered use cases and their reports (JSON and the HTML page), on the read API
with its bearer tokens. 404 for a use case never started or an unknown version, 503 when ClickHouse
cannot be reached."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated, Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import HTMLResponse

from streams.domain.experiments.model import UseCaseReport
from streams.settings import Settings
from streams.warehouse import usecase_outcomes
from streams.warehouse import usecases as registry

log = logging.getLogger("streams.api.usecases")

_ID = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="use case id")
_UNAVAILABLE = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError)


def plain(value: Any) -> Any:
    """A report value as JSON: dataclasses as objects, enums as their values, dates as ISO text, and
    nan or infinite numbers (an empty arm, an undefined test) as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        if isinstance(value, UseCaseReport):
            out["primary_kpi"] = value.primary.kpi
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    return value


def usecases_router(
    settings: Settings, make_client: Callable[[], Client], authorised: Callable[..., None]
) -> APIRouter:
    router = APIRouter(prefix="/v1/usecases", tags=["use cases"], dependencies=[Depends(authorised)])
    where = f"ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port} unavailable"

    def rows_of(client: Client) -> Callable[[str], list[tuple[Any, ...]]]:
        return lambda sql: [tuple(row) for row in client.execute(sql)]

    def report_of(usecase_id: str, version: int | None) -> UseCaseReport:
        client = make_client()
        try:
            rows = rows_of(client)
            versions = registry.registrations(rows, usecase_id)
            if not versions:
                raise HTTPException(404, f"use case {usecase_id!r} was never started")
            chosen = (
                versions[-1] if version is None else next((r for r in versions if r.version == version), None)
            )
            if chosen is None:
                raise HTTPException(404, f"use case {usecase_id!r} has no version {version}")
            return usecase_outcomes.report(rows, chosen, datetime.now(UTC))
        except _UNAVAILABLE as exc:
            log.warning("use case report: %s: %s", where, exc)
            raise HTTPException(503, where) from None
        finally:
            client.disconnect()

    @router.get("")
    def listing() -> list[dict[str, Any]]:
        """Every registered version: running or stopped, when, and its registered fields."""
        client = make_client()
        try:
            found = registry.registrations(rows_of(client))
        except _UNAVAILABLE as exc:
            log.warning("use case list: %s: %s", where, exc)
            raise HTTPException(503, where) from None
        finally:
            client.disconnect()
        return [
            {
                "usecase_id": reg.usecase_id,
                "version": reg.version,
                "running": reg.running,
                "started_at": reg.started_at.isoformat(),
                "stopped_at": reg.stopped_at.isoformat() if reg.stopped_at else None,
                "checksum": reg.checksum,
                "registration": reg.registration,
            }
            for reg in found
        ]

    @router.get("/{usecase_id}/report")
    def report(
        usecase_id: Annotated[str, _ID],
        version: Annotated[int | None, Query(ge=1, description="default: the newest")] = None,
    ) -> dict[str, Any]:
        """The report as JSON: arms, every KPI's estimate (role, lift, interval, p-value), sample ratio,
        power, the cumulative lift of the primary KPI, contaminated persons. Undefined figures are null."""
        result: dict[str, Any] = plain(report_of(usecase_id, version))
        return result

    @router.get("/{usecase_id}/report.html", response_class=HTMLResponse)
    def report_html(
        usecase_id: Annotated[str, _ID],
        version: Annotated[int | None, Query(ge=1, description="default: the newest")] = None,
    ) -> HTMLResponse:
        """The report as one self-contained HTML page with its charts (no network needed to view it)."""
        from streams.reports.usecase_html import render_html

        return HTMLResponse(render_html(report_of(usecase_id, version)))

    return router
