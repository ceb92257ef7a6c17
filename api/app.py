"""Assembles the Litestar app: dialect routers, the services it holds, error handlers, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.types import Message, Scope
from redis.asyncio import Redis

from api.accounts import Accounts
from api.auth import PRINCIPAL_STATE, KeyCache
from api.dialects import (
    admin,
    batches,
    content,
    credits,
    custom,
    discovery,
    files,
    jobs,
    keys,
    llm,
    media,
    metrics,
    models,
    native,
    openai,
    status,
    users,
    webhooks,
)
from api.dialects import images as image_routes
from api.errors import app_handlers
from api.openapi import describe_routes, openapi_config
from api.openapi import router as docs_router
from api.pages import router as pages_router
from api.pages import template_config
from api.personas import CustomModelCache
from api.request_log import RequestLog
from api.sessions import Sessions
from api.state import Services
from api.validation import refuse_nul_params
from jobs import durability
from jobs.catalog import Catalog
from jobs.client import JobClient
from jobs.deadletters import DeadLetters
from jobs.streams import StreamHub
from storage import bounds
from storage.db import Database
from storage.files import Files
from switchyard import logs, redis_client
from switchyard.errors import ServiceUnavailable
from switchyard.providers import load_providers
from switchyard.settings import Settings, get_settings


async def rate_limit_headers(message: Message, scope: Scope) -> None:
    """Every response to a key carries its hourly window (`X-RateLimit-*`); routes that admit
    work set them from admission itself, the others get them here (one Redis read)."""
    if message["type"] != "http.response.start" or message["status"] >= 500:
        return  # a 5xx says what is wrong (a stalled Redis would only hold it for another bound)
    principal = scope.get("state", {}).get(PRINCIPAL_STATE)
    if principal is None or principal.record is None or principal.anonymous:
        return  # the anonymous tier's per-minute headers come from admission alone
    headers = list(message.get("headers", ()))
    if any(name.lower() == b"x-ratelimit-limit" for name, _ in headers):
        return
    svc: Services = scope["app"].state.services
    try:
        extra = await svc.accounts.hourly_headers(principal)
    except ServiceUnavailable:  # the response itself says what is wrong; it goes out without them
        return
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    message["headers"] = headers


def create_app(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    db: Database | None = None,
    catalog: Catalog | None = None,
) -> Litestar:
    settings = settings or get_settings()
    providers = load_providers(settings.providers_file) if catalog is None else catalog.config

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not settings.redis_url and redis is None:
            raise RuntimeError("REDIS_URL is not set: `switchyard up` starts an embedded Redis and sets it")
        own_redis = redis is None
        bounds.configure(settings.dependency_timeout_s)
        # No `socket_timeout`: redis-py would wrap every send in `wait_for` (~22 us a command);
        # the request path bounds its Redis calls with `asyncio.timeout` instead (`redis_call`),
        # and the pub/sub listeners keep blocking reads with no timeout, as they must.
        r = redis or redis_client.connect(
            settings.redis_url,  # type: ignore[arg-type]
            socket_keepalive=True,
            socket_connect_timeout=settings.dependency_timeout_s,
            health_check_interval=30,
        )
        own_db = db is None
        database = db or Database(settings.database_url_or_default, timeout_s=settings.dependency_timeout_s)
        cat = catalog or Catalog(providers, r)
        cat.redis = cat.redis or r
        dead_letters = DeadLetters.from_settings(r, settings)
        await durability.warn_at_start(r, "web")
        job_client = JobClient(r, database, result_ttl_s=settings.result_ttl_s, dead_letters=dead_letters)
        await job_client.start()
        sessions = Sessions(r, database, settings)
        app.state.services = Services(
            settings=settings,
            redis=r,
            db=database,
            jobs=job_client,
            catalog=cat,
            keys=KeyCache(
                database,
                settings.admin_key,
                anonymous=settings if settings.anonymous else None,
                sessions=sessions,
            ),
            accounts=Accounts(
                r, database, sync_credits=settings.sync_credits, batch_credits=settings.batch_credits
            ),
            files=Files.from_settings(settings, database),
            streams=StreamHub(r, dead_letters=dead_letters),
            custom_models=CustomModelCache(database),
            dead_letters=dead_letters,
            sessions=sessions,
        )
        try:
            yield
        finally:
            await discovery.close_model_events(app)
            await app.state.services.streams.close()
            await job_client.close()
            if own_redis:
                await r.aclose()
            if own_db:
                await database.dispose()

    logs.configure_if_asked()  # a web worker uvicorn spawned logs as its parent does
    app = Litestar(
        route_handlers=[
            native.router,
            credits.router,
            openai.router,
            batches.router,
            jobs.router,
            webhooks.router,
            keys.router,
            users.router,
            status.router,
            files.router,
            llm.cloudgpt_router,
            llm.apidocs_router,
            custom.router,
            media.router,
            content.router,
            models.native_router,
            models.cloudgpt_router,
            *image_routes.routers,
            discovery.router,  # 003, and /health
            admin.router,
            admin.overview_router,
            metrics.router,
            docs_router,
            pages_router,
        ],
        lifespan=[lifespan],
        before_send=[rate_limit_headers],
        before_request=refuse_nul_params,
        exception_handlers=app_handlers(),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        template_config=template_config(),
        debug=False,
        logging_config=None,
    )
    describe_routes(app)
    app.asgi_handler = RequestLog(app.asgi_handler)
    return app
