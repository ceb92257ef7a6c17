"""Provider adapters: one module per kind of upstream API."""

from __future__ import annotations


class ProviderError(Exception):
    """An upstream call failed. `retryable` failures (429, 5xx, timeouts, connection errors)
    are tried again and then on the next provider; the others are the caller's problem."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
