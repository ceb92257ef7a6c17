"""What the admin sees at a glance: queues, workers, providers, recent failures, dead letters and
users with their credits. One function, `admin_overview`, feeds both GET /api/admin/overview
and the /admin page; each part comes from what already reads it (`switchyard status`'s
snapshot, the provider states of /health and /api/providers/status, the key views of
/api/keys, the credits roll-up of /api/auth/me).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from api.dialects.discovery import provider_states
from api.dialects.keys import credits_left, key_views
from api.state import Services
from jobs.client import redis_call
from jobs.records import JobRecord, iso_s, now_ms
from storage.keys import list_keys
from storage.users import list_users
from switchyard import metrics

RECENT_FAILURES = 20


def failure_view(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "model": record.model,
        "key_id": record.owner,
        "error": {"type": record.error_type, "message": record.error_message},
        "finished_at": iso_s(record.finished_ms),
    }


async def users_with_credits(svc: Services) -> list[dict[str, Any]]:
    """Every user, oldest first, with their keys (revoked ones too) and the credits their keys
    have left, summed as /api/auth/me sums them (null when no live key is metered)."""
    users, records = await asyncio.gather(list_users(svc.db), list_keys(svc.db))
    views = await key_views(svc, [r for r in records if r.user_id is not None])
    owned: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record, view in zip((r for r in records if r.user_id is not None), views, strict=True):
        owned[record.user_id].append(view)  # type: ignore[index]
    return [
        {
            "id": user.id,
            "email": user.email,
            "role": user.role,
            "disabled": user.disabled,
            "created": int(user.created_at.timestamp()),
            "credits": credits_left(owned[user.id]),
            "keys": [
                {k: v[k] for k in ("id", "name", "prefix", "status", "credits", "lastUsed")}
                for v in owned[user.id]
            ],
        }
        for user in users
    ]


async def admin_overview(svc: Services) -> dict[str, Any]:
    """The whole overview; Redis or the database out of reach is a 503, as on every route."""
    snap, providers, failures, users = await asyncio.gather(
        redis_call(lambda: metrics.scrape(svc.redis, counters=False)),
        provider_states(svc),
        svc.jobs.recent_failures(RECENT_FAILURES),
        users_with_credits(svc),
    )
    status = metrics.status_view(snap)
    return {
        "generated_at": iso_s(now_ms()),
        "queues": status["queues"],
        "workers": status["workers"],
        "persist": status["persist"],
        "dead_letters": status["dead_letters"],
        "providers": providers,
        "recent_failures": [failure_view(r) for r in failures],
        "users": users,
    }
