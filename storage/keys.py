"""API keys: created with a random secret shown once, stored as its SHA-256, listed by prefix."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import select

from storage.db import Database
from storage.models import ApiKey

KEY_PREFIX = "ck_"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written as UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    is_active: bool
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and as_utc(self.expires_at) <= utcnow()


def _record(row: ApiKey) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        is_active=row.is_active,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
    )


async def create_key(db: Database, name: str, expires_at: datetime | None = None) -> tuple[KeyRecord, str]:
    """Returns the record and the secret; the secret is never stored and never shown again."""
    secret = KEY_PREFIX + secrets.token_hex(16)
    row = ApiKey(
        id="key_" + secrets.token_hex(8),
        name=name,
        prefix=secret[:7],
        key_hash=hash_key(secret),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    async with db.session() as session:
        session.add(row)
    return _record(row), secret


async def list_keys(db: Database) -> list[KeyRecord]:
    async with db.session() as session:
        rows = (await session.exec(select(ApiKey).order_by(ApiKey.created_at))).all()
    return [_record(r) for r in rows]


async def revoke_key(db: Database, key_id: str) -> KeyRecord | None:
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        row.revoked_at = utcnow()
        row.is_active = False
        session.add(row)
    return _record(row)


async def find_key(db: Database, key_hash: str) -> KeyRecord | None:
    async with db.session() as session:
        row = (await session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash))).first()
    return _record(row) if row else None
