"""Domain errors. Every layer raises these; only `api/` decides how a dialect spells them."""

from __future__ import annotations

from typing import Any


class SwitchyardError(Exception):
    status_code = 500
    error_type = "internal_error"
    title = "Internal Server Error"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.extra = extra or {}
        self.headers = headers or {}
        self.code = code or self.error_type

    @property
    def param(self) -> str | None:
        return self.details[0].get("field") if self.details else None


class InvalidRequest(SwitchyardError):
    status_code = 400
    error_type = "invalid_request_error"
    title = "Bad Request"

    @classmethod
    def field(cls, field: str, message: str, value: Any = None) -> InvalidRequest:
        return cls(f"{field}: {message}", details=[{"field": field, "message": message, "value": value}])


class Unauthorized(SwitchyardError):
    status_code = 401
    error_type = "authentication_error"
    title = "Unauthorized"


class Forbidden(SwitchyardError):
    status_code = 403
    error_type = "permission_error"
    title = "Forbidden"


class PaymentRequired(SwitchyardError):
    status_code = 402
    error_type = "insufficient_credits"
    title = "Payment Required"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"Insufficient credits. Required: {required}, Available: {available}",
            extra={"credits_required": required, "credits_available": available},
        )


class NotFound(SwitchyardError):
    status_code = 404
    error_type = "not_found_error"
    title = "Not Found"


class ModelNotFound(NotFound):
    error_type = "model_not_found"

    def __init__(self, model: str, suggestions: list[str] | None = None) -> None:
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        detail: dict[str, Any] = {"field": "model", "message": "unknown model", "value": model}
        if suggestions:
            detail["suggestions"] = suggestions
        super().__init__(f"Model '{model}' not found{hint}", details=[detail])
        self.suggestions = suggestions or []


class JobNotFound(NotFound):
    error_type = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job '{job_id}' not found")


class BatchNotFound(NotFound):
    error_type = "batch_not_found"

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"Batch '{batch_id[:100]}' not found")


class Conflict(SwitchyardError):
    """The resource clashes with one that exists (a custom model name the key already uses)."""

    status_code = 409
    error_type = "conflict"
    title = "Conflict"


class IdempotencyKeyReused(SwitchyardError):
    """An `Idempotency-Key` sent again with another request (another body or route) than the
    one that first used it (Stripe answers such a retry with an error, never the other job)."""

    status_code = 422
    error_type = "idempotency_error"
    title = "Unprocessable Entity"

    def __init__(self, message: str, *, status_code: int = 422) -> None:
        super().__init__(
            f"Idempotency-Key: {message}",
            details=[{"field": "Idempotency-Key", "message": message, "value": None}],
        )
        self.status_code = status_code
        if status_code == 409:
            self.title = "Conflict"


class PayloadTooLarge(SwitchyardError):
    status_code = 413
    error_type = "request_too_large"
    title = "Payload Too Large"


class RateLimited(SwitchyardError):
    status_code = 429
    error_type = "rate_limit_exceeded"
    title = "Rate limit exceeded"


class ProviderFailed(SwitchyardError):
    """A provider could not serve the job: every attempt and fallback failed, or it refused."""

    status_code = 502
    error_type = "provider_error"
    title = "Bad Gateway"


class JobTimedOut(ProviderFailed):
    error_type = "timeout"


class StillRunning(SwitchyardError):
    """A synchronous call whose client cannot read a 202 (OpenAI's routes) waited as long as the
    job may take and it is not over: the job goes on and can be polled by its id."""

    status_code = 504
    error_type = "timeout"
    title = "Gateway Timeout"

    def __init__(self, job_id: str, waited_s: float) -> None:
        super().__init__(
            f"the job {job_id} did not finish within {waited_s:g} s; it goes on and its result can"
            f" be read at GET /api/v1/jobs/{job_id}",
            code="job_still_running",
            # OpenAI's clients retry a 5xx unless told not to; a retry would run the work again.
            headers={"x-job-id": job_id, "x-should-retry": "false"},
        )


class JobCanceled(SwitchyardError):
    status_code = 409
    error_type = "canceled"
    title = "Canceled"


class NotSupported(SwitchyardError):
    """What a route cannot do at all here (e.g. a site that offers no search without an account)."""

    status_code = 501
    error_type = "not_supported"
    title = "Not Implemented"


class RecordUnreadable(SwitchyardError):
    """A job's record (its Redis hash, its completion message or its database row) that cannot
    be read. It names the job (when the record does) and why; readers set such a record aside
    as a dead letter (`jobs.deadletters`) and go on."""

    status_code = 500
    error_type = "record_unreadable"
    title = "Internal Server Error"

    def __init__(self, job_id: str | None, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        # whatever the record held, the header carries only a plain job id
        plain = job_id is not None and len(job_id) <= 64 and job_id.isascii() and job_id.isprintable()
        super().__init__(
            f"the record of job {(job_id or '(unknown)')[:64]!s} cannot be read: {reason}",
            headers={"x-job-id": job_id} if plain and job_id else None,
        )


class ServiceUnavailable(SwitchyardError):
    status_code = 503
    error_type = "service_unavailable"
    title = "Service Unavailable"


class DependencyTimeout(ServiceUnavailable):
    """A dependency (the database, Redis) did not answer within the bound of the request path."""

    error_type = "service_unavailable"

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(f"{what} unavailable: no answer within {timeout_s:g} s; try again shortly")
        self.what = what
        self.timeout_s = timeout_s


class ConfigError(Exception):
    """The providers file or the settings are wrong; raised at startup, never per request."""
