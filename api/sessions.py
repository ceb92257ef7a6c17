"""Who is signed in: server-side sessions in Redis behind an HttpOnly cookie, the current user,
role checks, CSRF, and the client's address (X-Forwarded-For only from trusted proxies).

A session is a random id in the cookie; Redis holds `sy:session:<sha256(id)>` → the user id
and the session's CSRF token, expiring after SWITCHYARD_SESSION_TTL_S. Signing in always
makes a new id (a cookie planted before sign-in never becomes a signed-in session). Only the
routes that read sessions touch them: the API-key hot path never pays for a cookie.

CSRF: every state-changing request authenticated by the cookie must carry the session's token
in `X-CSRF-Token` (or a form's `csrf_token` field); requests with an API key are exempt (a
browser never adds one on its own). Signing in and up come before any session: a browser
request sent from another site (`Sec-Fetch-Site`, else `Origin`) is refused there, so another
site cannot sign a visitor's browser into an account of its choosing (login CSRF); the HTML
forms also carry a token of their own (api.pages.auth).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import orjson
from litestar import Request
from litestar.connection import ASGIConnection
from redis.asyncio import Redis

from jobs.client import redis_call
from storage.db import Database
from storage.users import UserRecord, get_user
from switchyard.errors import Forbidden, RateLimited, Unauthorized
from switchyard.settings import Settings

COOKIE = "sy_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_STATE = "switchyard_session"


def _redis_key(session_id: str) -> str:
    return "sy:session:" + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: UserRecord
    csrf: str


def client_ip(connection: ASGIConnection[Any, Any, Any, Any], settings: Settings) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the nearest address
    in X-Forwarded-For that is not one (walking from the right, as each proxy appended)."""
    peer = connection.client.host if connection.client else "unknown"
    if not settings.trusted_proxies:
        return peer

    def trusted(addr: str) -> bool:
        try:
            ip = ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in settings.trusted_proxies)

    if not trusted(peer):
        return peer
    hops = [
        h.strip() for h in ",".join(connection.headers.getall("x-forwarded-for", [])).split(",") if h.strip()
    ]
    for hop in reversed(hops):
        try:
            ip_address(hop)
        except ValueError:
            return peer  # a malformed hop: the chain cannot be read past it
        if not trusted(hop):
            return hop
    return hops[0] if hops else peer


class Sessions:
    def __init__(self, redis: Redis, db: Database, settings: Settings) -> None:
        self.redis = redis
        self.db = db
        self.ttl_s = settings.session_ttl_s
        self.secure = (settings.public_url or "").lower().startswith("https://")

    async def create(self, user: UserRecord) -> Session:
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32))
        value = orjson.dumps({"user_id": user.id, "csrf": session.csrf})
        await redis_call(lambda: self.redis.set(_redis_key(session.id), value, ex=self.ttl_s))
        return session

    async def destroy(self, session_id: str) -> None:
        await redis_call(lambda: self.redis.delete(_redis_key(session_id)))

    def cookie(self, session_id: str | None) -> str:
        """The Set-Cookie header value that holds the session (None: that clears it)."""
        attrs = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
        if session_id is None:
            return f"{COOKIE}=; Max-Age=0" + attrs
        return f"{COOKIE}={session_id}; Max-Age={self.ttl_s}" + attrs

    async def load(self, request: ASGIConnection[Any, Any, Any, Any]) -> Session | None:
        """The request's live session with its user (enabled), or None. Read once per request."""
        if SESSION_STATE in request.state:
            return request.state[SESSION_STATE]  # type: ignore[no-any-return]
        found = None
        session_id = request.cookies.get(COOKIE)
        if session_id and len(session_id) <= 100:
            raw = await redis_call(lambda: self.redis.get(_redis_key(session_id)))
            data = orjson.loads(raw) if raw else None
            user = await get_user(self.db, data["user_id"]) if data else None
            if user is not None and not user.disabled:
                found = Session(session_id, user, data["csrf"])  # type: ignore[index]
        request.state[SESSION_STATE] = found
        return found

    async def current_user(self, request: ASGIConnection[Any, Any, Any, Any]) -> UserRecord | None:
        session = await self.load(request)
        return session.user if session else None

    async def require(self, request: Request, *, admin: bool = False, what: str = "do this") -> Session:
        """The signed-in session (401 without one), its CSRF token checked on a state-changing
        request (403 without it), and the admin role when asked (403 saying `what` is the admin's)."""
        session = await self.load(request)
        if session is None:
            raise Unauthorized("Not signed in: sign in at POST /api/auth/signin, or send an API key")
        await check_csrf(request, session)
        if admin and not session.user.is_admin:
            raise Forbidden(f"only an admin may {what}")
        return session


async def check_csrf(request: Request, session: Session, *, form: bool = True) -> None:
    """The session's token on a state-changing request: the header, or (with `form`) a form's
    field. A call to the API proper takes the header only (its body is the API's, not a form)."""
    if request.method in SAFE_METHODS:
        return
    token = request.headers.get(CSRF_HEADER)
    if not token and form and "form" in (request.headers.get("content-type") or ""):
        token = (await request.form()).get(CSRF_FIELD)
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise Forbidden(
            f"CSRF token missing or wrong: send the session's token (GET /api/auth/me) in X-CSRF-Token"
            f" or the form field {CSRF_FIELD}",
            code="csrf_failed",
        )


def refuse_cross_site(request: Request, public_url: str | None) -> None:
    """A 403 for a browser's request sent from another site. Browsers say so in
    `Sec-Fetch-Site`; one too old for it sends `Origin`, whose host must then be ours (the
    request's `Host` or SWITCHYARD_PUBLIC_URL's). Clients that are no browser send neither."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        foreign = site not in ("same-origin", "none")
    else:
        origin = request.headers.get("origin")
        if origin is None:
            return
        ours = {request.headers.get("host") or "", urlsplit(public_url or "").netloc} - {""}
        foreign = urlsplit(origin).netloc not in ours
    if foreign:
        raise Forbidden(
            "this request was sent from another site; sign in from Switchyard's own pages or with a"
            " client that is no browser",
            code="csrf_failed",
        )


async def limit_attempts(redis: Redis, settings: Settings, *, email: str, ip: str, now_s: float) -> None:
    """Count one sign-in attempt for the email and for the address; 429 once either is over."""
    window = settings.signin_window_s
    slot = int(now_s // window)
    email_key = f"sy:signin:e:{hashlib.sha256(email.encode()).hexdigest()}:{slot}"
    ip_key = f"sy:signin:ip:{ip}:{slot}"

    async def count() -> list[Any]:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.incr(email_key)
            pipe.expire(email_key, window + 60)
            pipe.incr(ip_key)
            pipe.expire(ip_key, window + 60)
            return await pipe.execute()  # type: ignore[no-any-return]

    by_email, _, by_ip, _ = await redis_call(count)
    retry_after = str(max(1, int((slot + 1) * window - now_s)))
    for used, limit, what in (
        (by_email, settings.signin_attempts_per_email, "this email"),
        (by_ip, settings.signin_attempts_per_ip, "this address"),
    ):
        if int(used) > limit:
            raise RateLimited(
                f"Too many sign-in attempts for {what}: at most {limit} per {window} s",
                headers={"retry-after": retry_after},
                code="signin_rate_limited",
            )


async def forget_attempts(redis: Redis, settings: Settings, *, email: str, now_s: float) -> None:
    """A successful sign-in clears the email's count (the address keeps its own)."""
    slot = int(now_s // settings.signin_window_s)
    key = f"sy:signin:e:{hashlib.sha256(email.encode()).hexdigest()}:{slot}"
    await redis_call(lambda: redis.delete(key))
