"""API keys: created with a random secret shown once, stored as its SHA-256, listed by prefix."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from sqlalchemy import func, update
from sqlmodel import col, select

from storage.bounds import bounded_call
from storage.db import Database
from storage.models import ApiKey, Usage, User

KEY_PREFIX = "ck_"

Count = Annotated[int, Meta(ge=0)]
Limit = Count | None  # None (JSON null): unlimited; 0 blocks

# Limits on input (README): a key's credits and limits stay far inside what Redis' integers,
# Lua's doubles (exact to 2^53) and the database's BIGINT hold, top-ups and sums included.
MAX_CREDITS = 10**9
MAX_LIMIT = 10**12


class PerMinute(msgspec.Struct, forbid_unknown_fields=True):
    """Requests per minute per modality (api-reference 001, authenticated users)."""

    chat: Limit = 60
    image: Limit = 30
    video: Limit = 10


class KeyLimits(msgspec.Struct, forbid_unknown_fields=True):
    """Per-key limits; an omitted one takes api-reference 000's default, `null` is unlimited."""

    hourly: Limit = 100
    daily_requests: Limit = 1000
    daily_tokens: Limit = 50_000
    max_tokens_per_request: Limit = 4000
    per_minute: PerMinute = msgspec.field(default_factory=PerMinute)

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def over_maximum(self) -> str | None:
        """The first limit above `MAX_LIMIT` (as `limits.<name>`), or None. Checked where keys
        are made, not where they are read: a key stored before the maximum still loads."""
        for name, value in msgspec.structs.asdict(self).items():
            if isinstance(value, PerMinute):
                for modality, per in msgspec.structs.asdict(value).items():
                    if per is not None and per > MAX_LIMIT:
                        return f"limits.{name}.{modality}"
            elif value is not None and value > MAX_LIMIT:
                return f"limits.{name}"
        return None

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> KeyLimits:
        return msgspec.convert(raw or {}, cls)


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
    limits: KeyLimits = field(default_factory=KeyLimits)
    models: tuple[str, ...] | None = None
    credits: int | None = None  # credits granted (at creation and by top-ups); None: not metered
    allow_upstream_override: bool = False  # may name its own upstream (X-OpenAI-Base-URL / -Key)
    user_id: str | None = None  # the user who owns it; None: an admin-made key of no one's
    webhook_url: str | None = None  # where its jobs' webhooks go when a job names no URL

    @property
    def metered(self) -> bool:
        return self.credits is not None

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
        limits=KeyLimits.from_dict(row.limits),
        models=tuple(row.models) if row.models is not None else None,
        credits=row.credits,
        allow_upstream_override=bool(row.allow_upstream_override),
        user_id=row.user_id,
        webhook_url=row.webhook_url,
    )


@bounded_call("database")
async def create_key(
    db: Database,
    name: str,
    expires_at: datetime | None = None,
    *,
    limits: KeyLimits | None = None,
    models: list[str] | None = None,
    credits: int | None = None,
    allow_upstream_override: bool = False,
    user_id: str | None = None,
    webhook_url: str | None = None,
) -> tuple[KeyRecord, str]:
    """Returns the record and the secret; the secret is never stored and never shown again.
    The key's webhook signing secret is made here too (`webhook_secret` reads it, for the
    creator to show once: it signs, so it is stored, and never listed)."""
    secret = KEY_PREFIX + secrets.token_hex(16)
    signing = new_webhook_secret()
    row = ApiKey(
        id="key_" + secrets.token_hex(8),
        name=name,
        prefix=secret[:7],
        key_hash=hash_key(secret),
        created_at=utcnow(),
        expires_at=expires_at,
        limits=(limits or KeyLimits()).to_dict(),
        models=list(models) if models is not None else None,
        credits=credits,
        allow_upstream_override=allow_upstream_override,
        user_id=user_id,
        webhook_url=webhook_url,
        webhook_secret=signing,
    )
    async with db.session() as session:
        session.add(row)
    return _record(row), secret


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@bounded_call("database")
async def webhook_secret(db: Database, key_id: str) -> str | None:
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
    return row.webhook_secret if row else None


@bounded_call("database")
async def rotate_webhook_secret(db: Database, key_id: str) -> str | None:
    """A new signing secret for the key (the old one signs nothing more); None: no such key."""
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        row.webhook_secret = new_webhook_secret()
        session.add(row)
        return row.webhook_secret


@bounded_call("database")
async def set_webhook_url(db: Database, key_id: str, url: str | None) -> KeyRecord | None:
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        row.webhook_url = url
        session.add(row)
    return _record(row)


@bounded_call("database")
async def get_key(db: Database, key_id: str) -> KeyRecord | None:
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
    return _record(row) if row else None


@bounded_call("database")
async def list_keys(db: Database, user_id: str | None = None) -> list[KeyRecord]:
    """Every key, or (with `user_id`) that user's keys, oldest first."""
    query = select(ApiKey).order_by(col(ApiKey.created_at))
    if user_id is not None:
        query = query.where(col(ApiKey.user_id) == user_id)
    async with db.session() as session:
        rows = (await session.exec(query)).all()
    return [_record(r) for r in rows]


@bounded_call("database")
async def revoke_key(db: Database, key_id: str, user_id: str | None = None) -> KeyRecord | None:
    """Revoke a live key (with `user_id`: only that user's); None when there is no such key."""
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        if user_id is not None and row.user_id != user_id:
            return None
        row.revoked_at = utcnow()
        row.is_active = False
        session.add(row)
    return _record(row)


@bounded_call("database")
async def find_key(db: Database, key_hash: str) -> KeyRecord | None:
    """The key with this hash; a key whose user is disabled reads as inactive."""
    async with db.session() as session:
        row = (await session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash))).first()
        owner = await session.get(User, row.user_id) if row is not None and row.user_id else None
    return _live_record(row, owner)


@bounded_call("database")
async def find_key_by_id(db: Database, key_id: str) -> KeyRecord | None:
    """The key with this id, as `find_key` reads it (a disabled user's key reads as inactive)."""
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        owner = await session.get(User, row.user_id) if row is not None and row.user_id else None
    return _live_record(row, owner)


def _live_record(row: ApiKey | None, owner: User | None) -> KeyRecord | None:
    if row is None:
        return None
    record = _record(row)
    if owner is not None and owner.disabled:
        record = replace(record, is_active=False)
    return record


@bounded_call("database")
async def grant_credits(db: Database, key_id: str, amount: int) -> None:
    """Add to a key's credits granted (a key without credits becomes credit-metered)."""
    async with db.begin() as conn:
        await conn.execute(
            update(ApiKey)
            .where(col(ApiKey.id) == key_id)
            .values(credits=func.coalesce(col(ApiKey.credits), 0) + amount)
        )


@bounded_call("database")
async def credit_balances(db: Database, key_ids: list[str]) -> dict[str, int]:
    """What the database says each metered key has left: credits granted less the credits its
    recorded jobs were charged. Redis holds the live balance; this seeds it when Redis has none."""
    if not key_ids:
        return {}
    spent_q = (
        select(col(Usage.key_id), func.coalesce(func.sum(col(Usage.credits)), 0))
        .where(col(Usage.key_id).in_(key_ids))
        .group_by(col(Usage.key_id))
    )
    async with db.connect() as conn:
        granted_q = select(col(ApiKey.id), col(ApiKey.credits)).where(col(ApiKey.id).in_(key_ids))
        granted = dict((await conn.execute(granted_q)).all())
        spent = dict((await conn.execute(spent_q)).all())
    return {k: int(g) - int(spent.get(k, 0)) for k, g in granted.items() if g is not None}
