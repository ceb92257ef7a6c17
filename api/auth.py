"""Who is calling: API keys from `X-API-Key`, `?api_key=` or `Authorization: Bearer`; or, for a
page in the browser, the signed-in session plus `X-Switchyard-Key: <key id>` naming one of the
user's own keys (any key for an admin), with the session's CSRF token on a state-changing call.
Either way the call then acts as that key: its limits, credits and usage."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from sqlalchemy.exc import SQLAlchemyError

from api.sessions import COOKIE, Sessions, check_csrf, client_ip
from storage.db import Database
from storage.keys import KeyLimits, KeyRecord, PerMinute, find_key, find_key_by_id, hash_key
from switchyard.errors import Forbidden, NotFound, ServiceUnavailable, Unauthorized
from switchyard.settings import Settings

ADMIN = "admin"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRINCIPAL_STATE = "switchyard_principal"
SESSION_KEY_HEADER = "x-switchyard-key"  # a signed-in browser names the key it acts as
MAX_KEY_ID = 40  # the column's length: a longer id names no key


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    is_admin: bool = False
    record: KeyRecord | None = None  # None for the admin key: no limits, no credits
    anonymous: bool = False  # a caller without a key (api-reference 001's anonymous tier)


ADMIN_PRINCIPAL = Principal(ADMIN, is_admin=True)
# api-reference 001: anonymous callers get 10 chat, 5 image and 2 video calls a minute, nothing else.
ANONYMOUS_LIMITS = KeyLimits(
    hourly=None, daily_requests=None, daily_tokens=None, per_minute=PerMinute(chat=10, image=5, video=2)
)


def anonymous_principal(ip: str) -> Principal:
    """The caller without a key at this address: its counts and jobs are under an id made from
    the address (hashed: no address is stored with jobs or usage)."""
    key_id = "anon_" + hashlib.sha256(ip.encode()).hexdigest()[:24]
    record = KeyRecord(
        id=key_id, name="anonymous", prefix="", is_active=True, created_at=_EPOCH, expires_at=None,
        revoked=False, limits=ANONYMOUS_LIMITS,
    )  # fmt: skip
    return Principal(key_id, record=record, anonymous=True)


def presented_key(request: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    headers = request.headers
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.query_params.get("api_key")
    return key.strip() if key else None


class KeyCache:
    """Key lookups by hash, kept for a few seconds so the request path rarely touches the database.

    A revocation made through this process takes effect at once; one made elsewhere within `ttl_s`.
    """

    def __init__(
        self,
        db: Database,
        admin_key: str | None,
        ttl_s: float = 5.0,
        *,
        anonymous: Settings | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.db = db
        self.admin_key = admin_key
        self.anonymous = anonymous  # the settings of the anonymous tier when it is on
        self.sessions = sessions  # None: no caller may act through a session
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, KeyRecord | None]] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._by_id: dict[str, tuple[float, KeyRecord | None]] = {}  # the session path's, by key id

    def invalidate(self) -> None:
        self._entries.clear()
        self._by_id.clear()

    async def lookup(self, secret: str) -> KeyRecord | None:
        digest = hash_key(secret)
        hit = self._entries.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # One database read per key however many requests arrive while it runs (when an entry
        # expires under load, every request in flight for that key would miss at once).
        pending = self._inflight.get(digest)
        if pending is None:
            pending = self._inflight[digest] = asyncio.ensure_future(self._load(digest))
            pending.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(pending)

    async def _load(self, digest: str) -> KeyRecord | None:
        try:
            record = await find_key(self.db, digest)
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable("database unavailable: cannot check the API key") from exc
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl_s, record)
        return record

    async def lookup_id(self, key_id: str) -> KeyRecord | None:
        """The key with this id, kept as long as `lookup` keeps a key (the session path only)."""
        hit = self._by_id.get(key_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            record = await find_key_by_id(self.db, key_id)
        except (SQLAlchemyError, OSError) as exc:
            raise ServiceUnavailable("database unavailable: cannot check the API key") from exc
        if len(self._by_id) > 10_000:
            self._by_id.clear()
        self._by_id[key_id] = (time.monotonic() + self.ttl_s, record)
        return record

    def is_admin(self, secret: str) -> bool:
        return bool(self.admin_key) and hmac.compare_digest(secret.encode(), self.admin_key.encode())  # type: ignore[union-attr]

    async def authenticate(
        self, request: ASGIConnection[Any, Any, Any, Any], *, anonymous: bool = False
    ) -> Principal:
        """The caller of a request or a WebSocket (`X-API-Key`, `Authorization: Bearer` or
        `?api_key=`, which is all a browser's WebSocket can send). `anonymous`: a route of the
        anonymous tier, where a caller without a key is its client address (when the tier is on)."""
        secret = presented_key(request)
        if not secret and self.sessions is not None and SESSION_KEY_HEADER in request.headers:
            return await self.session_key(request, self.sessions)
        if not secret and anonymous and self.anonymous is not None:
            principal = anonymous_principal(client_ip(request, self.anonymous))
            request.state[PRINCIPAL_STATE] = principal
            return principal
        if not secret:
            raise Unauthorized(
                "Missing API key: send X-API-Key, Authorization: Bearer, or ?api_key= (signed in:"
                " X-Switchyard-Key with the id of one of your keys)"
            )
        if self.is_admin(secret):
            request.state[PRINCIPAL_STATE] = ADMIN_PRINCIPAL  # for the request log's key_id
            return ADMIN_PRINCIPAL
        record = await self.lookup(secret)
        if record is None or record.revoked:
            raise Unauthorized("Invalid API key")
        if not record.is_active:
            raise Forbidden("API key is inactive")
        if record.expired:
            raise Forbidden("API key has expired")
        principal = Principal(record.id, record=record)
        request.state[PRINCIPAL_STATE] = principal  # for the rate-limit headers of the response
        return principal

    async def session_key(self, request: ASGIConnection[Any, Any, Any, Any], sessions: Sessions) -> Principal:
        """The key a signed-in browser names in X-Switchyard-Key: 401 without a session, 403
        without the CSRF token on a state-changing call, 404 for a key id not the user's."""
        if request.scope["type"] != "http":  # a WebSocket carries no CSRF token: a key only
            raise Unauthorized("X-Switchyard-Key works on HTTP requests only: send ?api_key=")
        session = await sessions.load(request)
        if session is None:
            raise Unauthorized(
                "X-Switchyard-Key needs a signed-in session (POST /api/auth/signin); or send an API key"
            )
        await check_csrf(request, session, form=False)  # type: ignore[arg-type]
        key_id = request.headers[SESSION_KEY_HEADER].strip()
        record = await self.lookup_id(key_id) if 0 < len(key_id) <= MAX_KEY_ID else None
        if record is None or (record.user_id != session.user.id and not session.user.is_admin):
            raise NotFound(f"API key '{key_id[:MAX_KEY_ID]}' not found among your keys (X-Switchyard-Key)")
        if record.revoked:
            raise Unauthorized(f"API key '{key_id}' is revoked")
        if not record.is_active:
            raise Forbidden("API key is inactive")
        if record.expired:
            raise Forbidden("API key has expired")
        principal = Principal(record.id, record=record)
        request.state[PRINCIPAL_STATE] = principal
        return principal

    async def require_admin(self, request: Request, what: str = "manage keys") -> Principal:
        """The admin key or a signed-in admin (its CSRF token checked on a state-changing call),
        or a 401/403 saying what only the admin may do (`what`)."""
        secret = presented_key(request)
        if not secret and self.sessions is not None and request.cookies.get(COOKIE):
            await self.sessions.require(request, admin=True, what=what)
            request.state[PRINCIPAL_STATE] = ADMIN_PRINCIPAL
            return ADMIN_PRINCIPAL
        if not secret:
            raise Unauthorized(
                "Missing admin key: send Authorization: Bearer <SWITCHYARD_ADMIN_KEY>, or sign in as an admin"
            )
        if not self.admin_key:
            raise Forbidden(f"no one may {what}: SWITCHYARD_ADMIN_KEY is not set")
        if not self.is_admin(secret):
            if await self.lookup(secret) is not None:
                raise Forbidden(f"only the admin key may {what}")
            raise Unauthorized("Invalid API key")
        request.state[PRINCIPAL_STATE] = ADMIN_PRINCIPAL  # for the request log's key_id
        return ADMIN_PRINCIPAL
