"""The credits dialect's answer (api-reference 002): OpenAI's chat.completion with what the
call cost and what is left."""

from __future__ import annotations

from api.schemas.openai import ChatCompletion, CompletionUsage


class CreditsCompletion(ChatCompletion, kw_only=True):
    usage: CompletionUsage  # type: ignore[assignment]  # always here: the price depends on it
    credits_charged: int
    credits_remaining: int | None  # null: the key is not credit-metered
    batch_request: bool  # `?batch=1`: charged the batch price
