"""Job kinds: the name a worker function is registered under, and the shape of its payload."""

from __future__ import annotations

from typing import Any, TypedDict

CHAT_COMPLETION = "chat_completion"
KINDS: tuple[str, ...] = (CHAT_COMPLETION,)


class ChatPayload(TypedDict):
    model: str
    request: dict[str, Any]  # the OpenAI chat-completions body sent upstream, model included
