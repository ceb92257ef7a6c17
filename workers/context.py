"""What every job handler receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from jobs.catalog import Catalog
from jobs.deadletters import DeadLetters
from storage.db import Database
from storage.files import Files
from switchyard.settings import Settings
from workers.http import Upstream
from workers.routing import ProviderHealth

if TYPE_CHECKING:
    from arq.connections import ArqRedis


class WorkerCtx(TypedDict, total=False):
    redis: ArqRedis
    http: Upstream
    db: Database
    files: Files  # stored files: what a job made, served at /api/v1/files/{id}
    catalog: Catalog
    provider_health: ProviderHealth
    dead_letters: DeadLetters  # where a record a background loop cannot handle is set aside
    settings: Settings
    job_id: str
    job_try: int
    job: dict[str, Any]  # the job's state hash (owner, dialect, model, ...)
