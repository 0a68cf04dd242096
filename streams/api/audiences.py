"""The audience pull API (decision 0013): ad platforms, or their connectors, pull an audience as a
snapshot and then as deltas from its cursor. Mounted in the read API (``omniseg api serve``).

Auth: ``Authorization: Bearer <key>``, the destination's API key (its SHA-256 is in its YAML file);
401 without a known key, 403 when the path names another destination or an audience the destination
does not read, 404 for an audience id that is none. Cursors: 400 for a malformed one or one ahead of
the newest delta, 410 for one older than the retained deltas. Every pull is recorded in
``audience_pulls`` before it is answered (an export: when its last row is sent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import orjson
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from streams.api.destinations import DestinationRegistry
from streams.domain.audiences import exports
from streams.domain.audiences.destinations import Destination, destination_for_key, parse_audience_id
from streams.settings import Settings
from streams.warehouse import audiences as queries
from streams.warehouse.audience_cursors import CursorError, CursorExpired, format_cursor, parse_cursor

log = logging.getLogger("streams.api.audiences")

EXPORT_PAGE_SIZE = 10_000
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class Error(BaseModel):
    detail: str = Field(description="What went wrong, in one line.")


class MemberOut(BaseModel):
    kind: str = Field(description="email | phone | mobile_advertising_id | external_id")
    hash: str = Field(description="SHA-256 hex of the identifier normalised for the destination's platform")


class AudienceOut(BaseModel):
    audience_id: str = Field(description="segment id, or segment id/subject for one product or category")
    members: int


class AudienceList(BaseModel):
    destination_id: str
    cursor: str = Field(description="The cursor the sizes are taken at.")
    audiences: list[AudienceOut]


class SnapshotOut(BaseModel):
    members: list[MemberOut]
    next_page_token: str | None = Field(
        description="Pass it as page_token for the next page; null when done."
    )
    done: bool
    cursor: str | None = Field(description="On the last page: the snapshot's cursor, where deltas continue.")


class DeltasOut(BaseModel):
    add: list[MemberOut] = Field(description="Members added since the cursor (netted).")
    remove: list[MemberOut] = Field(description="Members removed since the cursor (netted).")
    cursor: str = Field(description="Pass it as cursor next time.")
    more: bool = Field(description="The limit was reached: ask again at once for the rest.")


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    return {code: {"model": Error, "description": _ERROR_TEXT[code]} for code in codes}


_ERROR_TEXT = {
    400: "A malformed cursor or page token, or one ahead of the newest delta.",
    401: "No known destination API key.",
    403: "The key's destination is another one, or it does not read this audience.",
    404: "No such audience id.",
    410: "The cursor is older than the retained deltas: take a new snapshot.",
    422: "A parameter out of its range (the first problem, in one line).",
    503: "ClickHouse unavailable.",
}
_AUDIENCE_ERRORS = _errors(400, 404, 410)
_EXPORT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/csv": {}}, "description": "The CSV file, streamed."},
    **_errors(400, 404),
}
AudiencePath = Annotated[str, Path(description="segment id, or segment id/subject (e.g. bought/product:P1)")]


def audiences_router(
    settings: Settings,
    make_client: Callable[[], Client],
    registry: DestinationRegistry,
    tail: queries.NewerDeltas | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1/destinations", tags=["audiences"], responses=_errors(401, 403, 422, 503))
    where = f"{settings.clickhouse_host}:{settings.clickhouse_port}"

    def destination(request: Request, destination_id: str) -> Destination:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        found = destination_for_key(registry.current(), key.strip())
        if scheme.lower() != "bearer" or found is None:
            raise HTTPException(
                status_code=401,
                detail="missing or unknown destination API key (send Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if found.id != destination_id:
            raise HTTPException(
                status_code=403, detail=f"this API key is not destination {destination_id!r}'s"
            )
        return found

    def readable(found: Destination, audience: str) -> str:
        try:
            segment_id, subject = parse_audience_id(audience)
        except ValueError as exc:
            raise HTTPException(status_code=404, detail=f"no such audience: {exc}") from None
        if not found.reads(segment_id, subject):
            raise HTTPException(
                status_code=403, detail=f"destination {found.id!r} does not read {audience!r}"
            )
        return audience

    @contextmanager
    def clickhouse() -> Iterator[Client]:
        try:
            client = make_client()
        except Exception as exc:  # the driver connects lazily: this is a configuration error
            raise HTTPException(status_code=503, detail=f"ClickHouse unavailable: {exc}") from None
        try:
            yield client
        except CursorExpired as exc:
            raise HTTPException(status_code=410, detail=str(exc)) from None
        except CursorError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as exc:
            log.warning("audiences: ClickHouse unavailable: %s", exc)
            raise HTTPException(status_code=503, detail=f"ClickHouse {where} unavailable") from None
        finally:
            client.disconnect()

    def requester(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    @router.get("/{destination_id}/audiences", summary="The destination's audiences and their sizes")
    def list_audiences(request: Request, found: Destination = Depends(destination)) -> AudienceList:
        """Every audience the destination reads that has members or is named in its configuration, with
        its members at the newest cursor."""
        with clickhouse() as client:
            cursor = queries.frontier(client)
            sizes = queries.listing(client, found, cursor)
            queries.record_pull(client, found.id, "", "list", len(sizes), cursor, cursor, requester(request))
        return AudienceList(
            destination_id=found.id,
            cursor=format_cursor(cursor),
            audiences=[AudienceOut(audience_id=s.audience_id, members=s.members) for s in sizes],
        )

    @router.get(
        "/{destination_id}/audiences/{audience_id:path}/snapshot",
        summary="One page of an audience snapshot",
        response_model=SnapshotOut,
        responses=_AUDIENCE_ERRORS,
    )
    def snapshot(
        request: Request,
        audience_id: AudiencePath,
        page_token: Annotated[str | None, Query(description="From the previous page; none to start")] = None,
        page_size: Annotated[
            int, Query(ge=1, le=queries.MAX_PAGE_SIZE, description="Members per page, about (first page)")
        ] = 1000,
        found: Destination = Depends(destination),
    ) -> Response:
        """The members at one cursor, page by page. The first page fixes the cursor (the newest) and the
        page count; follow next_page_token until done, then ask for deltas from the cursor given."""
        audience = readable(found, audience_id)
        with clickhouse() as client:
            page = queries.snapshot_page(client, found.id, audience, page_token, page_size)
            queries.record_pull(
                client, found.id, audience, "snapshot", len(page.members), page.cursor, page.cursor,
                requester(request),
            )  # fmt: skip
        # Serialised directly (the shape of SnapshotOut): a page holds up to ten thousand members,
        # and validating a model per member cost more than reading them from ClickHouse.
        body = {
            "members": [{"kind": m.kind, "hash": m.hash} for m in page.members],
            "next_page_token": page.next_page_token,
            "done": page.done,
            "cursor": format_cursor(page.cursor) if page.done else None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/{destination_id}/audiences/{audience_id:path}/deltas",
        summary="Changes of an audience since a cursor",
        responses=_AUDIENCE_ERRORS,
    )
    def deltas(
        request: Request,
        audience_id: AudiencePath,
        cursor: Annotated[str, Query(description="From a finished snapshot or the previous deltas")],
        limit: Annotated[
            int, Query(ge=1, le=queries.MAX_DELTAS, description="At most this many changes")
        ] = 1000,
        found: Destination = Depends(destination),
    ) -> DeltasOut:
        """The members added and removed since ``cursor``, netted (a member added and removed again is in
        neither list), as two lists: send the removes and the adds, in either order."""
        audience = readable(found, audience_id)
        with clickhouse() as client:
            start = parse_cursor(cursor)
            page = queries.deltas(client, found.id, audience, start, limit, tail)
            queries.record_pull(
                client, found.id, audience, "deltas", len(page.adds) + len(page.removes), start,
                page.next_cursor, requester(request),
            )  # fmt: skip
        return DeltasOut(
            add=[MemberOut(kind=m.kind, hash=m.hash) for m in page.adds],
            remove=[MemberOut(kind=m.kind, hash=m.hash) for m in page.removes],
            cursor=format_cursor(page.next_cursor),
            more=page.more,
        )

    @router.get(
        "/{destination_id}/audiences/{audience_id:path}/export",
        summary="The audience as a CSV file for the platform's upload",
        response_class=StreamingResponse,
        responses=_EXPORT_RESPONSES,
    )
    def export(
        request: Request,
        audience_id: AudiencePath,
        format: Annotated[
            str | None, Query(description="google or meta; default: the destination's platform")
        ] = None,
        found: Destination = Depends(destination),
    ) -> StreamingResponse:
        """The members at the newest cursor in Google Customer Match (``Email,Phone``) or Meta Custom
        Audiences (``email,phone,madid,extern_id``) CSV form, one hashed identifier per row; kinds the
        format has no column for are left out. The cursor is in the X-Omniseg-Cursor header."""
        audience = readable(found, audience_id)
        try:
            fmt = exports.export_format(found.kind, format)
        except exports.ExportFormatError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        with clickhouse() as probe:  # errors before the first byte get their status code
            first = queries.snapshot_page(probe, found.id, audience, page_size=EXPORT_PAGE_SIZE)
        who = requester(request)

        def chunks() -> Iterator[str]:
            """The header, then one chunk per snapshot page: memory holds one page at a time."""
            written = 0
            client = make_client()
            try:
                yield exports.header(fmt)
                page: queries.SnapshotPage | None = first
                while page is not None:
                    text, count = exports.rows(fmt, page.members)
                    written += count
                    yield text
                    token = page.next_page_token
                    page = None if token is None else queries.snapshot_page(client, found.id, audience, token)
            except Exception as exc:  # the status is sent: the client sees the download cut short
                log.error(
                    "audiences: export of %s/%s failed after %d rows: %s", found.id, audience, written, exc
                )
                raise
            finally:
                try:
                    queries.record_pull(
                        client, found.id, audience, "export", written, first.cursor, first.cursor, who
                    )
                except Exception as exc:
                    log.error("audiences: export of %s/%s not recorded: %s", found.id, audience, exc)
                client.disconnect()

        name = _UNSAFE_FILENAME.sub("_", f"{found.id}-{audience}-{first.cursor}-{fmt}")
        return StreamingResponse(
            chunks(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"',
                "X-Omniseg-Cursor": format_cursor(first.cursor),
            },
        )

    return router
