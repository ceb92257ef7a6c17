"""Users who sign in: email (normalized, unique), an argon2 password hash, a role; and invitations.

Hashing and verifying a password cost tens of milliseconds of CPU on purpose: callers on an
event loop run `hash_password` / `verify_password` in a thread.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from pwdlib import PasswordHash
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.bounds import bounded_call
from storage.db import Database
from storage.keys import as_utc, utcnow
from storage.models import Invite, User
from switchyard.errors import Conflict, InvalidRequest

ADMIN, USER = "admin", "user"
ROLES = (ADMIN, USER)
MIN_PASSWORD, MAX_PASSWORD = 8, 1024  # argon2 reads every byte: the bound keeps a hash cheap
MAX_EMAIL = 320

_hasher = PasswordHash.recommended()  # argon2id with pwdlib's current parameters


@cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a wrong email costs what a wrong password does."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str
    role: str
    created_at: datetime
    disabled: bool
    password_hash: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def normalize_email(raw: str) -> str | None:
    """The email as stored and compared (trimmed, lower-case), or None when it is not one."""
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        return None
    if len(email) > MAX_EMAIL or any(c.isspace() or c in '<>()[],;:\\"' for c in email):
        return None
    return email


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether `password` is the one hashed; with no hash, spends the same time and says no."""
    if password_hash is None:
        _hasher.verify(password, _dummy_hash())
        return False
    try:
        return bool(_hasher.verify(password, password_hash))
    except Exception:  # an unreadable stored hash is a wrong password, not a 500
        return False


def _record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        email=row.email,
        role=row.role,
        created_at=as_utc(row.created_at),
        disabled=bool(row.disabled),
        password_hash=row.password_hash,
    )


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@bounded_call("database")
async def create_user(
    db: Database, email: str, password_hash: str, *, role: str = USER, invite: str | None = None
) -> UserRecord:
    """A new user; Conflict when the email is taken or the invite (a code) is used or unknown.
    With `invite`, the invitation is spent in the same transaction."""
    row = User(
        id="usr_" + secrets.token_hex(8),
        email=email,
        password_hash=password_hash,
        role=role,
        created_at=utcnow(),
    )
    try:
        async with db.session() as session:
            if invite is not None:
                now = utcnow()
                spent = await session.exec(
                    update(Invite)  # type: ignore[call-overload]
                    .where(col(Invite.code_hash) == hash_code(invite), col(Invite.used_by).is_(None))
                    .values(used_by=row.id, used_at=now)
                )
                found = await session.get(Invite, hash_code(invite))
                if spent.rowcount != 1 or found is None:
                    raise InvalidRequest.field("invite", "unknown or already used")
                if found.expires_at is not None and as_utc(found.expires_at) <= now:
                    raise InvalidRequest.field("invite", "has expired")
            existing = (await session.exec(select(User).where(User.email == email))).first()
            if existing is not None:
                raise Conflict("email: already registered")
            session.add(row)
    except IntegrityError:  # a concurrent sign-up took the email between the check and the insert
        raise Conflict("email: already registered") from None
    return _record(row)


@bounded_call("database")
async def find_user(db: Database, email: str) -> UserRecord | None:
    async with db.session() as session:
        row = (await session.exec(select(User).where(User.email == email))).first()
    return _record(row) if row else None


@bounded_call("database")
async def get_user(db: Database, user_id: str) -> UserRecord | None:
    async with db.session() as session:
        row = await session.get(User, user_id)
    return _record(row) if row else None


@bounded_call("database")
async def list_users(db: Database) -> list[UserRecord]:
    async with db.session() as session:
        rows = (await session.exec(select(User).order_by(col(User.created_at)))).all()
    return [_record(r) for r in rows]


@bounded_call("database")
async def set_disabled(db: Database, user_id: str, disabled: bool) -> UserRecord | None:
    async with db.session() as session:
        row = await session.get(User, user_id)
        if row is None:
            return None
        row.disabled = disabled
        session.add(row)
    return _record(row)


@bounded_call("database")
async def create_invite(db: Database, expires_at: datetime | None = None) -> str:
    """A new invitation code (shown once; stored as its SHA-256)."""
    code = "inv_" + secrets.token_urlsafe(18)
    async with db.session() as session:
        session.add(Invite(code_hash=hash_code(code), created_at=utcnow(), expires_at=expires_at))
    return code
