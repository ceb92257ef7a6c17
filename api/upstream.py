"""api-reference 004's per-call upstream: `X-OpenAI-Base-URL` and `X-OpenAI-Key`.

Only a key created with `allow_upstream_override` may use them (the admin key may too), and a
base URL must be http(s) to a public address unless `SWITCHYARD_ALLOW_PRIVATE_URLS` is on:
otherwise a caller could make the workers call into the network they run in. The key goes
to the worker in the queued job's body only; it is never logged, stored or returned.
"""

from __future__ import annotations

from litestar import Request

from api.auth import Principal
from api.state import Services
from jobs.kinds import UpstreamOverride
from switchyard.errors import Forbidden, InvalidRequest
from switchyard.urls import check_url_async

BASE_URL_HEADER, KEY_HEADER = "X-OpenAI-Base-URL", "X-OpenAI-Key"


async def upstream_override(request: Request, svc: Services, principal: Principal) -> UpstreamOverride | None:
    """The caller's upstream for this call, or None when it names none."""
    base_url = request.headers.get(BASE_URL_HEADER)
    api_key = request.headers.get(KEY_HEADER)
    if base_url is None and api_key is None:
        return None
    named = BASE_URL_HEADER if base_url is not None else KEY_HEADER
    if principal.record is not None and not principal.record.allow_upstream_override:
        raise Forbidden(
            f"{named}: this API key may not override the upstream (create it with allow_upstream_override)",
            details=[{"field": named, "message": "not allowed for this key", "value": None}],
        )
    override: UpstreamOverride = {}
    if base_url is not None:
        base_url = base_url.strip()
        if not base_url:
            raise InvalidRequest.field(BASE_URL_HEADER, "must not be empty", base_url)
        url = await check_url_async(
            base_url, allow_private=svc.settings.allow_private_urls, field=BASE_URL_HEADER
        )
        override["base_url"] = url.rstrip("/")
    if api_key is not None:
        api_key = api_key.strip()
        if not api_key:
            raise InvalidRequest.field(KEY_HEADER, "must not be empty")
        override["api_key"] = api_key
    return override
