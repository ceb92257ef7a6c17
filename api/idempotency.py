"""`Idempotency-Key` on job-creating routes, with Stripe's semantics.

The first request with a key makes its job and binds the key (scoped to the API key) to it for
`SWITCHYARD_IDEMPOTENCY_TTL_S` (24 h); the binding is made in the same Redis command that
admits and enqueues the job (`jobs.scripts.SUBMIT_ONCE`), so concurrent duplicates make one
job. A later request with the key and the same request (method, path, query, body and
`X-Metadata`) is a replay: the original job, waited for or rendered as the first answer was,
charged nothing again, with `Idempotent-Replayed: true`. Another request with the key is a 422.
"""

from __future__ import annotations

import hashlib

from litestar import Request

from jobs.client import IDEMPOTENCY_KEY, Once
from switchyard.errors import InvalidRequest

HEADER = "Idempotency-Key"
MAX_CHARS = 255
REPLAYED = {"idempotent-replayed": "true"}


async def idempotency(request: Request, key_id: str, ttl_s: float) -> Once | None:
    """The request's idempotency key, if it sent one: 1-255 printable ASCII characters."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_CHARS or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest.field(HEADER, f"must be 1 to {MAX_CHARS} printable ASCII characters")
    fingerprint = await _fingerprint(request)
    return Once(f"{IDEMPOTENCY_KEY}{key_id}:{value}", fingerprint, max(1, int(ttl_s * 1000)))


async def _fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    query = sorted(request.query_params.multi_items())
    for part in (request.method, request.url.path, repr(query), request.headers.get("x-metadata") or ""):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    digest.update(await request.body())
    return digest.hexdigest()
