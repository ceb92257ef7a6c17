"""Worker settings per queue, and the process-wide resources every job shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any, cast

from arq import func

from jobs import durability, queues
from jobs.batches import BATCH_DISPATCH, BATCH_FINALIZE
from jobs.catalog import Catalog
from jobs.deadletters import DeadLetters
from jobs.kinds import (
    CHAT_COMPLETION,
    EMBEDDING,
    IMAGE_GENERATION,
    LYRICS_SEARCH,
    MEDIA_DOWNLOAD,
    MEDIA_INFO,
    MOVIES,
    VIDEO_GENERATION,
)
from jobs.tasks import supervise
from storage.db import Database
from storage.files import Files
from switchyard.providers import load_providers
from switchyard.settings import Settings, get_settings
from workers.batches import batch_dispatch, batch_finalize
from workers.chat import chat_completion
from workers.content import lyrics_search, movies
from workers.context import WorkerCtx
from workers.discovery import discovery_loop
from workers.embedding import create_embeddings
from workers.files import run_file_sweeper
from workers.http import Upstream
from workers.images import image_generation, video_generation
from workers.media.handlers import media_download, media_info
from workers.routing import ProviderHealth
from workers.worker import SwitchyardWorker, lower_priority

log = logging.getLogger("switchyard.worker")


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.setdefault("settings", get_settings())
    ctx.setdefault("http", Upstream(settings))
    ctx.setdefault("db", Database(settings.database_url_or_default))
    ctx.setdefault("files", Files.from_settings(settings, ctx["db"]))
    if "catalog" not in ctx:
        ctx["catalog"] = Catalog(load_providers(settings.providers_file), ctx["redis"])
    else:
        ctx["catalog"].redis = ctx["catalog"].redis or ctx["redis"]
    ctx.setdefault("provider_health", ProviderHealth(ctx["redis"], settings))
    ctx.setdefault("dead_letters", DeadLetters.from_settings(ctx["redis"], settings))
    await durability.warn_at_start(ctx["redis"], "worker")
    ctx["discovery"] = supervise("model-discovery", partial(discovery_loop, cast(WorkerCtx, ctx)))
    ctx["file_sweeper"] = supervise("file-sweeper", partial(run_file_sweeper, ctx))


async def shutdown(ctx: dict[str, Any]) -> None:
    task = ctx.get("discovery")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    sweeper = ctx.get("file_sweeper")
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    await ctx["http"].aclose()
    await ctx["db"].dispose()


def job_functions(settings: Settings) -> list[Any]:
    media_timeout = settings.media_job_timeout_s
    handlers: list[tuple[Any, str, float]] = [
        (chat_completion, CHAT_COMPLETION, settings.job_timeout_s),
        (create_embeddings, EMBEDDING, settings.job_timeout_s),
        (image_generation, IMAGE_GENERATION, settings.job_timeout_s),
        (video_generation, VIDEO_GENERATION, max(settings.job_timeout_s, settings.video_timeout_s + 30)),
        (media_download, MEDIA_DOWNLOAD, media_timeout),
        (media_info, MEDIA_INFO, media_timeout),
        (lyrics_search, LYRICS_SEARCH, settings.job_timeout_s),
        (movies, MOVIES, settings.job_timeout_s),
        # a batch's control jobs: a dispatch run hands over to a fresh job after ~10 s
        (batch_dispatch, BATCH_DISPATCH, max(settings.job_timeout_s, 600.0)),
        (batch_finalize, BATCH_FINALIZE, max(settings.job_timeout_s, 600.0)),
    ]
    # arq types handlers loosely (ctx, *args)
    return [
        func(cast(Any, handler), name=name, timeout=timeout, max_tries=settings.worker_max_tries)
        for handler, name, timeout in handlers
    ]


def _max_jobs(serves: tuple[str, ...], settings: Settings) -> int:
    if queues.lane_of(serves[0]) == queues.LANES[queues.MEDIA_LANE]:
        return settings.media_max_jobs
    return settings.batch_max_jobs if serves == (queues.BATCH,) else settings.worker_max_jobs


def create_worker(
    queue: str | tuple[str, ...],
    settings: Settings | None = None,
    *,
    ctx: dict[str, Any] | None = None,
    **overrides: Any,
) -> SwitchyardWorker:
    settings = settings or get_settings()
    serves = (queue,) if isinstance(queue, str) else tuple(queue)
    for q in serves:
        if q not in queues.QUEUES:
            raise ValueError(f"unknown queue {q!r}; queues: {', '.join(queues.QUEUES)}")
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: `switchyard up` starts an embedded Redis and sets it")
    options: dict[str, Any] = dict(
        functions=job_functions(settings),
        serves=serves,
        redis_url=settings.redis_url,
        redis_options={"socket_connect_timeout": settings.dependency_timeout_s, "socket_keepalive": True},
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings, **(ctx or {})},
        max_jobs=_max_jobs(serves, settings),
        job_timeout=settings.job_timeout_s,
        max_tries=settings.worker_max_tries,
        lease_s=settings.worker_lease_s,
        result_ttl_s=settings.result_ttl_s,
        job_completion_wait=int(settings.worker_shutdown_grace_s),
    )
    options.update(overrides)
    return SwitchyardWorker(**options)


def run_worker(queue: str) -> None:
    """`queue`: one queue, or several of one lane separated by commas (`media,media-batch`)."""
    settings = get_settings()
    serves = tuple(q.strip() for q in queue.split(",") if q.strip())
    if serves == (queues.BATCH,):
        lower_priority(settings.batch_nice)
    elif queues.MEDIA in serves or queues.MEDIA_BATCH in serves:
        lower_priority(settings.media_nice)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    worker = create_worker(serves, settings)
    worker.run()
