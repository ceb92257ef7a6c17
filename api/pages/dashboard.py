"""/dashboard: the user's credits, each key's limits and what is left of each window, and
requests and tokens per day and per model (today, 7 or 30 days) as server-drawn SVG charts.
The figures come from the functions behind /api/auth/me and the status routes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from litestar import Request, get
from litestar.response import Template

from api.dialects.status import key_limits
from api.dialects.users import user_summary
from api.pages.common import page, signed_in
from api.state import services
from storage import usage
from storage.keys import list_keys

RANGES = {"today": 1, "7d": 7, "30d": 30}
CHART_W, CHART_H, LABEL_H = 420, 200, 34


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    label: str
    value: int
    show_label: bool


def bars(points: list[tuple[str, int]]) -> list[Bar]:
    """Bars scaled to the chart's box, labels thinned so that they never overlap."""
    if not points:
        return []
    top = max(v for _, v in points) or 1
    slot = CHART_W / len(points)
    every = max(1, round(len(points) / 6))
    out = []
    for i, (label, value) in enumerate(points):
        h = (CHART_H - LABEL_H - 16) * value / top  # 16: room for the value above the tallest bar
        out.append(
            Bar(
                x=round(i * slot + slot * 0.15, 1),
                y=round(CHART_H - LABEL_H - h, 1),
                w=round(slot * 0.7, 1),
                h=round(h, 1),
                label=label,
                value=value,
                show_label=i % every == 0 or i == len(points) - 1,
            )
        )
    return out


def _range(request: Request) -> str:
    wanted = request.query_params.get("range", "7d")
    return wanted if wanted in RANGES else "7d"


@get("/dashboard", include_in_schema=False)
async def dashboard(request: Request) -> Template:
    session = await signed_in(request)
    svc = services(request)
    chosen = _range(request)
    days = RANGES[chosen]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    keys = await list_keys(svc.db, session.user.id)
    key_ids = [k.id for k in keys]
    # Independent reads, at once: the page costs about its slowest query, not their sum.
    summary, daily, models, *limits = await asyncio.gather(
        user_summary(svc, session.user, keys),
        usage.daily(svc.db, key_ids, days, midnight.date()),
        usage.per_model(svc.db, key_ids, midnight - timedelta(days=days - 1)),
        *(key_limits(svc, k) for k in keys if not (k.revoked or k.expired)),
    )
    live = [v for v in summary["key_views"] if v["status"] == "active"]
    windows = [
        {"key": view, "limits": lim, "state": state} for view, (lim, state) in zip(live, limits, strict=True)
    ]
    period = usage.Totals()
    for _, t in daily:
        period.requests += t.requests
        period.successful += t.successful
        period.total_tokens += t.total_tokens
    return page(
        request,
        "dashboard.html",
        session,
        summary=summary,
        windows=windows,
        chosen=chosen,
        ranges=list(RANGES),
        period=period,
        chart_w=CHART_W,
        chart_h=CHART_H,
        requests_by_day=bars([(d.strftime("%m-%d"), t.requests) for d, t in daily]),
        tokens_by_day=bars([(d.strftime("%m-%d"), t.total_tokens) for d, t in daily]),
        models=models,
        requests_by_model=bars([(m or "?", t.requests) for m, t in models[:8]]),
        tokens_by_model=bars([(m or "?", t.total_tokens) for m, t in models[:8]]),
    )


handlers = [dashboard]
