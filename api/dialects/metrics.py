"""`GET /metrics`: the whole system's metrics (`switchyard.metrics`) in Prometheus' text format.

Read from Redis at scrape time, so any web process answers for every process on every machine.
The admin key only, unless `SWITCHYARD_METRICS_PUBLIC=true`.
"""

from __future__ import annotations

from litestar import Request, Response, Router, get
from prometheus_client import CONTENT_TYPE_LATEST

from api.errors import NATIVE, handlers_for
from api.state import services
from jobs.client import redis_call
from switchyard import metrics


@get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response[bytes]:
    svc = services(request)
    if not svc.settings.metrics_public:
        await svc.keys.require_admin(request, "read metrics")
    snap = await redis_call(lambda: metrics.scrape(svc.redis))
    return Response(metrics.render(snap), media_type=CONTENT_TYPE_LATEST)


router = Router(path="/", route_handlers=[get_metrics], exception_handlers=handlers_for(NATIVE))
