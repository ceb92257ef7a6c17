"""A job's webhook as the request names it.

A job-creating request names its webhook Replicate's way, in the JSON body (`webhook`, and
`webhook_events_filter`: some of `start`, `output`, `logs`, `completed`), or with the
`X-Webhook-URL` header on any job route; else the key's default URL (if it has one) is used,
for `completed`. The URL is checked like every user-supplied URL (`switchyard.urls`): an
address that is not public is a 400 naming the field unless private URLs are allowed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from litestar import Request

from api.auth import Principal
from jobs import webhooks
from switchyard.errors import InvalidRequest
from switchyard.settings import Settings
from switchyard.urls import check_url_async

HEADER = "X-Webhook-URL"
_FIELD = b'"webhook'
MAX_URL_CHARS = 2048


async def check_webhook_url(url: Any, field: str, settings: Settings) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest.field(field, "must be an http(s) URL")
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest.field(field, f"must be at most {MAX_URL_CHARS} characters", len(url))
    return await check_url_async(url.strip(), allow_private=settings.allow_private_urls, field=field)


def check_events(value: Any) -> list[str]:
    field = "webhook_events_filter"
    if not isinstance(value, list) or not value:
        raise InvalidRequest.field(field, f"must be a non-empty list of {', '.join(webhooks.EVENTS)}")
    unknown = [v for v in value if v not in webhooks.EVENTS]
    if unknown:
        raise InvalidRequest.field(
            field, f"unknown event {str(unknown[0])[:40]!r}: the events are {', '.join(webhooks.EVENTS)}"
        )
    return list(dict.fromkeys(value))


async def request_webhook(request: Request, principal: Principal, settings: Settings) -> str | None:
    """The job state's webhook field for this request (`jobs.webhooks.webhook_state`), or None.

    The body is decoded again only when its bytes hold `"webhook` at all."""
    body = await request.body() if request.method != "GET" else b""
    raw: dict[str, Any] = {}
    if _FIELD in body:
        with contextlib.suppress(msgspec.DecodeError, RecursionError):
            decoded = msgspec.json.decode(body)
            raw = decoded if isinstance(decoded, dict) else {}
    header = request.headers.get("x-webhook-url")
    url: str | None = None
    if raw.get("webhook") is not None:
        if header is not None:
            raise InvalidRequest.field(HEADER, "send the webhook in the body or in this header, not both")
        url = await check_webhook_url(raw["webhook"], "webhook", settings)
    elif header is not None:
        url = await check_webhook_url(header, HEADER, settings)
    events = webhooks.DEFAULT_EVENTS
    if raw.get("webhook_events_filter") is not None:
        events = tuple(check_events(raw["webhook_events_filter"]))
    if url is None and principal.record is not None and principal.record.webhook_url:
        url = principal.record.webhook_url  # checked when it was set
    if url is None:
        if raw.get("webhook_events_filter") is not None:
            raise InvalidRequest.field(
                "webhook_events_filter", "needs a webhook URL (`webhook` or X-Webhook-URL)"
            )
        return None
    return webhooks.webhook_state(url, events)
