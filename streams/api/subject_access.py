"""``GET /v1/persons/export``: everything held about the person owning one identifier (GDPR Art. 15), as
the ``omniseg.subject_access.v1`` document (docs/subject_access.md), on the read API's bearer tokens.

Events are capped by ``max_events`` (default 10,000, at most 100,000, newest first); the ``events``
section says ``truncated`` with the total when the cap cut it, and ``omniseg person export`` writes
them all. 400 for an identifier that cannot be used, 404 when no person has it, 503 when ClickHouse
cannot be reached. Each export is logged in ``privacy_requests`` (no personal data); nothing about the
person is logged by the API.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from fastapi import APIRouter, Depends, HTTPException, Query

from streams.domain.identifiers import Normaliser
from streams.domain.person_view import IdentifierQueryError, parse_identifier
from streams.settings import Settings
from streams.warehouse.persons import PersonNotFound
from streams.warehouse.subject_access import Export, new_request_id, prepare, record_request

log = logging.getLogger("streams.api.subject_access")

DEFAULT_MAX_EVENTS = 10_000
MAX_EVENTS = 100_000
_UNAVAILABLE = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError)


def subject_access_router(
    settings: Settings,
    make_client: Callable[[], Client],
    authorised: Callable[..., None],
    normaliser: Normaliser,
) -> APIRouter:
    router = APIRouter(prefix="/v1/persons", tags=["privacy"], dependencies=[Depends(authorised)])
    unavailable = f"ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port} unavailable"

    @router.get("/export")
    def export(
        identifier: Annotated[
            str, Query(min_length=1, max_length=512, description="raw value or kind:value")
        ],
        kind: Annotated[str | None, Query(description="identifier kind, e.g. email")] = None,
        max_events: Annotated[
            int, Query(ge=0, le=MAX_EVENTS, description="at most this many events, the newest")
        ] = DEFAULT_MAX_EVENTS,
    ) -> dict[str, Any]:
        """Everything held about the person owning one identifier (subject access)."""
        try:
            key = parse_identifier(identifier, kind, normaliser)
        except IdentifierQueryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        try:
            client = make_client()
        except Exception as exc:  # the driver connects lazily; this is a configuration error
            raise HTTPException(status_code=503, detail=f"ClickHouse unavailable: {exc}") from None
        found: Export | None = None
        try:
            found = prepare(client, key, request_id=new_request_id(), max_events=max_events)
            document = found.document()
            record_request(client, found, "done")
        except PersonNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except _UNAVAILABLE as exc:
            log.warning("subject access: %s: %s", unavailable, type(exc).__name__)
            raise HTTPException(status_code=503, detail=unavailable) from None
        except Exception as exc:
            if found is not None:
                with contextlib.suppress(Exception):
                    record_request(client, found, "failed", f"export failed: {type(exc).__name__}")
            raise
        finally:
            client.disconnect()
        log.info("subject access %s: done", found.request_id)
        return document

    return router
