"""The read API: ``GET /v1/persons/lookup`` gives the single customer view of the person owning one
identifier, ``GET /v1/persons/export`` everything held about that person (subject access,
:mod:`streams.api.subject_access`), ``POST /v1/persons/erase`` erases the person (:mod:`streams.api.erasure`),
and ``/v1/destinations/...`` serves audiences to ad platforms
(:mod:`streams.api.audiences`, with its own keys). Served by ``omniseg api serve``.

Auth: ``Authorization: Bearer <token>`` with one of the comma-separated ``OMNISEG_API_TOKENS``; anything
else gets 401. Errors are JSON ``{"detail": "..."}``: 400 for an identifier that cannot be used (with the
reason), 404 when no person has it, 503 when ClickHouse cannot be reached. ``GET /health`` needs no
token: 200 when ClickHouse answers and the tables exist, 503 with a one-line reason otherwise. A request
whose parameters do not validate gets 422 with the first problem in one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from streams.api.audiences import audiences_router
from streams.api.credentials import SecretTable
from streams.api.delta_tail import DeltaTail
from streams.api.destinations import DestinationRegistry
from streams.api.erasure import erasure_router
from streams.api.subject_access import subject_access_router
from streams.api.usecases import usecases_router
from streams.domain.identifiers import Normaliser
from streams.domain.identity import IdentityRules
from streams.domain.person_view import IdentifierQueryError, parse_identifier
from streams.redaction import redact_access_logs
from streams.settings import Settings
from streams.warehouse import audiences as audience_queries
from streams.warehouse.persons import PersonNotFound, PersonStore

log = logging.getLogger("streams.api.persons")

ClientFactory = Callable[[], Client]
# The tables a lookup and an audience pull read; /ready checks they exist.
_HEALTH_TABLES = (
    "identities", "person_aliases", "event_persons", "segment_changes", "audience_deltas",
    "audience_members", "audience_pulls",
)  # fmt: skip


def api_tokens(settings: Settings) -> tuple[str, ...]:
    """The configured bearer tokens (``OMNISEG_API_TOKENS``, comma-separated, blanks ignored)."""
    raw = settings.api_tokens.get_secret_value()
    return tuple(token.strip() for token in raw.split(",") if token.strip())


def _client_factory(settings: Settings) -> ClientFactory:
    def make() -> Client:
        return Client(
            host=settings.clickhouse_host,
            port=settings.clickhouse_port,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            database=settings.clickhouse_database,
            connect_timeout=5,
            send_receive_timeout=30,
            client_name="omniseg-api",
        )

    return make


def create_persons_app(
    settings: Settings,
    *,
    normaliser: Normaliser | None = None,
    client_factory: ClientFactory | None = None,
    destinations: DestinationRegistry | None = None,
) -> FastAPI:
    """The FastAPI app. Identifiers are normalised with the identity rules of the settings; destinations
    come from ``settings.destinations_dir`` unless given."""
    tokens = SecretTable((token, True) for token in api_tokens(settings))
    redact_access_logs()  # a lookup's query string holds an identifier
    if normaliser is None:
        normaliser = IdentityRules.from_yaml(settings.identity_rules_path).normalisation.normaliser()
    make_client = client_factory or _client_factory(settings)
    tail = (
        DeltaTail(settings, audience_queries.frontier_reader(make_client))
        if settings.api_delta_tail
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if tail is not None:
            tail.start()
        try:
            yield
        finally:
            if tail is not None:
                await anyio.to_thread.run_sync(tail.close)

    app = FastAPI(title="omniseg read API", version="1", lifespan=lifespan)
    registry = destinations or DestinationRegistry(settings.destinations_dir)
    app.include_router(audiences_router(settings, make_client, registry, tail))

    def authorised(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Compared with every token in constant time: the time taken does not reveal which one is close.
        matched = tokens.find(token.strip())
        if scheme.lower() != "bearer" or matched is None:
            raise HTTPException(
                status_code=401,
                detail="missing or unknown bearer token (send Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app.include_router(usecases_router(settings, make_client, authorised))
    app.include_router(subject_access_router(settings, make_client, authorised, normaliser))
    app.include_router(erasure_router(settings, make_client, authorised, normaliser))

    @app.get("/v1/persons/lookup", dependencies=[Depends(authorised)])
    def lookup(
        identifier: Annotated[
            str, Query(min_length=1, max_length=512, description="raw value or kind:value")
        ],
        kind: Annotated[str | None, Query(description="identifier kind, e.g. email")] = None,
        events: Annotated[int, Query(ge=0, le=1000, description="how many recent events")] = 20,
    ) -> dict[str, Any]:
        """The single customer view of the person owning one identifier."""
        try:
            key = parse_identifier(identifier, kind, normaliser)
        except IdentifierQueryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        try:
            client = make_client()
        except Exception as exc:  # the driver connects lazily; this is a configuration error
            raise HTTPException(status_code=503, detail=f"ClickHouse unavailable: {exc}") from None
        try:
            view = PersonStore(client).lookup(key, events=events)
        except PersonNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as exc:
            log.warning("person lookup: ClickHouse unavailable: %s", exc)
            raise HTTPException(
                status_code=503,
                detail=f"ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port} unavailable",
            ) from None
        finally:
            client.disconnect()
        return view.to_dict()

    @app.get("/health", tags=["operations"])
    def health() -> JSONResponse:
        """Liveness: 200 while the API serves requests. No token needed."""
        return JSONResponse(status_code=200, content={"status": "ok"})

    @app.get("/ready", tags=["operations"])
    def ready() -> JSONResponse:
        """Readiness: 200 when ClickHouse answers and the person and audience tables exist; 503 with the
        reason otherwise. No token needed (load balancers and orchestrators call it)."""
        where = f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
        try:
            client = make_client()
        except Exception as exc:
            return JSONResponse(status_code=503, content={"status": "unavailable", "message": str(exc)})
        try:
            found = {
                str(row[0])
                for row in client.execute(
                    "SELECT name FROM system.tables WHERE database = %(db)s AND name IN %(names)s",
                    {"db": settings.clickhouse_database, "names": _HEALTH_TABLES},
                )
            }
        except (ch_errors.Error, OSError, EOFError) as exc:
            reason = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            return JSONResponse(
                status_code=503,
                content={"status": "unavailable", "message": f"ClickHouse {where}: {reason.splitlines()[0]}"},
            )
        finally:
            client.disconnect()
        missing = sorted(set(_HEALTH_TABLES) - found)
        if missing:
            return JSONResponse(
                status_code=503,
                content={
                    "status": "unavailable",
                    "message": f"ClickHouse {where} lacks {', '.join(missing)}: run omniseg migrate",
                },
            )
        return JSONResponse(status_code=200, content={"status": "ok", "clickhouse": where})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return JSONResponse(status_code=422, content={"detail": f"{field}: {first.get('msg', 'invalid')}"})

    @app.exception_handler(ch_errors.ServerException)
    async def _server_error(_request: Request, exc: ch_errors.ServerException) -> JSONResponse:
        # The server's message may quote the query, and a lookup's query holds the identifier.
        log.error("read API: ClickHouse error (code %s)", exc.code)
        log.debug("read API: ClickHouse error: %s", exc)
        return JSONResponse(
            status_code=500,
            content={"detail": f"ClickHouse error (code {exc.code}); were the migrations applied?"},
        )

    return app
