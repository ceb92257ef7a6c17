"""One log line per HTTP request, and the request id that follows the request into its job.

Wraps the whole app (inside Litestar's own entry point, outside routing and its error
handling), so a 404 for an unknown route or a 500 is logged like any other answer. The line
is `switchyard.logs.access`: method, route (the path template, not the path with its ids),
status, duration_ms, key_id, job_id (the answer's `x-job-id`, when there is one) and
request_id. The request id is the client's `x-request-id` when it is sane, else a new one;
it is answered in `x-request-id` and set in `switchyard.logs.REQUEST_ID` for the job client.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from api.auth import PRINCIPAL_STATE
from switchyard.logs import ACCESS, REQUEST_ID, access, request_id_from

_HEADER = b"x-request-id"
_JOB_HEADER = b"x-job-id"


class RequestLog:
    def __init__(self, app: Any) -> None:
        self.app = app
        # made once the process' logging is configured (create_app): a bound logger of its own
        # costs less a line than the lazy proxy, and nothing is built when INFO is off
        self.log = access.bind()
        self.enabled = self.log.is_enabled_for(logging.INFO)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                given = value
                break
        request_id = request_id_from(given)
        token = REQUEST_ID.set(request_id)
        answer: list[Any] = [500, None]  # status, job id
        id_header = (_HEADER, request_id.encode())

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                answer[0] = message["status"]
                headers = list(message.get("headers") or ())
                for name, value in headers:
                    if name.lower() == _JOB_HEADER:
                        answer[1] = value.decode("latin-1")
                headers.append(id_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            if self.enabled:
                principal = scope.get("state", {}).get(PRINCIPAL_STATE)
                self.log.info(
                    "request",
                    logger=ACCESS,
                    method=scope["method"],
                    route=scope.get("path_template") or scope["path"][:200],
                    status=answer[0],
                    duration_ms=round((perf_counter() - start) * 1000, 2),
                    key_id=principal.key_id if principal is not None else None,
                    job_id=answer[1],
                    request_id=request_id,
                )
