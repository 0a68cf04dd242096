"""``POST /v1/persons/erase`` and ``GET /v1/privacy/requests/{id}``: erasure on request (GDPR Art. 17)
through the read API, on its bearer tokens (docs/privacy.md).

An erasure takes seconds to minutes (it waits for every stage of the pipeline), so the call answers
202 with the request id as soon as the request is logged, and runs it in a background thread; the
request's status and receipt are then read from the request log. 400 for an identifier that cannot be
used or a malformed body, 404 when no person has it, 409 when an erasure of the same person is in
progress, 503 when ClickHouse cannot be reached. Nothing about the person is logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from streams.domain.identifiers import Normaliser
from streams.domain.person_view import IdentifierQueryError, parse_identifier
from streams.domain.privacy import valid_request_id
from streams.privacy.erasure import (
    Erasure,
    ErasureFailed,
    ErasureInProgress,
    ErasureRefused,
    ErasureUnsupported,
    find_subject,
)
from streams.settings import Settings
from streams.warehouse import privacy_requests

log = logging.getLogger("streams.api.erasure")

_UNAVAILABLE = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError)


class ErasureBody(BaseModel):
    """One erasure request: an identifier (raw value or kind:value) or a person id."""

    model_config = ConfigDict(extra="forbid")

    identifier: str | None = Field(default=None, min_length=1, max_length=512)
    kind: str | None = Field(default=None, max_length=64, description="identifier kind, e.g. email")
    person_id: str | None = Field(default=None, min_length=1, max_length=128)
    suppress: bool = Field(default=True, description="drop later events carrying the identifiers")


def erasure_router(
    settings: Settings,
    make_client: Callable[[], Client],
    authorised: Callable[..., None],
    normaliser: Normaliser,
    timeout_s: float = 600.0,
) -> APIRouter:
    router = APIRouter(tags=["privacy"], dependencies=[Depends(authorised)])
    unavailable = f"ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port} unavailable"

    def run(job: Erasure, client: Client) -> None:
        try:
            job.run()
        except ErasureFailed as exc:
            log.warning("erasure %s failed: %s", job.request_id, exc)
        finally:
            client.disconnect()

    @router.post("/v1/persons/erase", status_code=202)
    def erase(body: ErasureBody) -> JSONResponse:
        """Erase the person owning an identifier (or with a person id) from every store."""
        if (body.identifier is None) == (body.person_id is None):
            raise HTTPException(status_code=400, detail="send exactly one of identifier and person_id")
        key = None
        if body.identifier is not None:
            try:
                key = parse_identifier(body.identifier, body.kind, normaliser)
            except IdentifierQueryError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from None
        try:
            client = make_client()
        except _UNAVAILABLE:
            raise HTTPException(status_code=503, detail=unavailable) from None
        try:
            subject = find_subject(client, key, body.person_id)
            job = Erasure(settings, client, subject, suppress=body.suppress, timeout_s=timeout_s)
            job.open()
        except ErasureRefused as exc:
            client.disconnect()
            status = (
                409
                if isinstance(exc, ErasureInProgress)
                else 501
                if isinstance(exc, ErasureUnsupported)
                else 404
            )
            raise HTTPException(status_code=status, detail=str(exc)) from None
        except _UNAVAILABLE:
            client.disconnect()
            raise HTTPException(status_code=503, detail=unavailable) from None
        name = f"erasure-{job.request_id}"
        threading.Thread(target=run, args=(job, client), name=name, daemon=True).start()
        return JSONResponse(
            status_code=202,
            content={
                "request_id": job.request_id,
                "status": "received",
                "status_url": f"/v1/privacy/requests/{job.request_id}",
            },
        )

    @router.get("/v1/privacy/requests/{request_id}")
    def request_status(request_id: str) -> dict[str, Any]:
        """A data-subject request's status and receipt (no personal data)."""
        if not valid_request_id(request_id):
            raise HTTPException(status_code=400, detail="malformed request id")
        try:
            client = make_client()
            try:
                found = privacy_requests.find(client.execute, request_id)
            finally:
                client.disconnect()
        except _UNAVAILABLE:
            raise HTTPException(status_code=503, detail=unavailable) from None
        if found is None:
            raise HTTPException(status_code=404, detail=f"no request {request_id}")
        return found.to_dict()

    return router
