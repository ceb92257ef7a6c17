"""`Idempotency-Key` on job-creating routes, with Stripe's semantics.

The first request with a key makes its job and binds the key (scoped to the API key) to it for
`SWITCHYARD_IDEMPOTENCY_TTL_S` (24 h); the binding is made in the same Redis command that
admits and enqueues the job (`jobs.scripts.SUBMIT`), so concurrent duplicates make one
job. A later request with the key and the same request (method, path, query, body and
`X-Metadata`) is a replay: the original job, waited for or rendered as the first answer was,
charged nothing again, with `Idempotent-Replayed: true`. Another request with the key is a 422.

Batches and batch files (`api/dialects/batches.py`) bind their keys with `claim` before they make
their record, in a key space of their own per resource (`scope`): one key may name both the
upload of a file and the batch made of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from litestar import Request
from redis.asyncio import Redis

from jobs.client import IDEMPOTENCY_KEY, Once, redis_call
from switchyard.errors import IdempotencyKeyReused, InvalidRequest

HEADER = "Idempotency-Key"
MAX_CHARS = 255
REPLAYED = {"idempotent-replayed": "true"}


def idempotency_header(request: Request) -> str | None:
    """The request's idempotency key, if it sent one: 1-255 printable ASCII characters."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_CHARS or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest.field(HEADER, f"must be 1 to {MAX_CHARS} printable ASCII characters")
    return value


async def idempotency(request: Request, key_id: str, ttl_s: float, *, scope: str = "") -> Once | None:
    """The request's idempotency key, if it sent one, fingerprinted with its whole body."""
    value = idempotency_header(request)
    if value is None:
        return None
    return once_for(key_id, value, fingerprint(request, [await request.body()]), ttl_s, scope=scope)


def once_for(key_id: str, value: str, fingerprint: str, ttl_s: float, *, scope: str = "") -> Once:
    return Once(f"{IDEMPOTENCY_KEY}{scope}{key_id}:{value}", fingerprint, max(1, int(ttl_s * 1000)))


def fingerprint(request: Request, body: Iterable[bytes]) -> str:
    """What makes two requests the same: method, path, query, `X-Metadata` and the body (or, for
    a streamed upload, what stands for it)."""
    digest = hashlib.sha256()
    query = sorted(request.query_params.multi_items())
    for part in (request.method, request.url.path, repr(query), request.headers.get("x-metadata") or ""):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    for chunk in body:
        digest.update(chunk)
    return digest.hexdigest()


async def claim(redis: Redis, once: Once, resource_id: str) -> str | None:
    """Bind the key to `resource_id` unless it is bound: None when this call bound it, else the
    id it is bound to. A request with another fingerprint is refused (`IdempotencyKeyReused`)."""

    async def bind() -> list[object]:
        async with redis.pipeline(transaction=True) as tr:
            tr.set(once.key, f"{resource_id} {once.fingerprint}", nx=True, px=once.ttl_ms)
            tr.get(once.key)
            return list(await tr.execute())

    bound, held = await redis_call(bind)
    if bound:
        return None
    held_id, _, held_fingerprint = (held or b"").decode().partition(" ")
    if held_fingerprint != once.fingerprint:
        raise IdempotencyKeyReused(
            "was used with another request (route, query or body) within its lifetime; send a new"
            " key for a new request"
        )
    return held_id


async def release(redis: Redis, once: Once, resource_id: str) -> None:
    """Free a key this request bound when its record could not be made (a retry may make it)."""

    async def free() -> None:
        if await redis.get(once.key) == f"{resource_id} {once.fingerprint}".encode():
            await redis.delete(once.key)

    await redis_call(free)
