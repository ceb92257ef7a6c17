"""What the web process holds for its lifetime, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request
from redis.asyncio import Redis

from api.accounts import Accounts
from api.auth import KeyCache
from api.personas import CustomModelCache
from api.sessions import Sessions
from jobs.catalog import Catalog
from jobs.client import JobClient
from jobs.deadletters import DeadLetters
from jobs.streams import StreamHub
from storage.db import Database
from storage.files import Files
from switchyard.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: Redis
    db: Database
    jobs: JobClient
    catalog: Catalog
    keys: KeyCache
    accounts: Accounts
    files: Files
    streams: StreamHub
    custom_models: CustomModelCache
    dead_letters: DeadLetters
    sessions: Sessions


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
