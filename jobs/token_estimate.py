"""A cheap upper-side estimate of a request's prompt tokens, for admission against token limits.

About 4 bytes of UTF-8 text make a token for the models we route; admission reserves this
estimate plus `max_tokens`, and the job's real usage settles the reservation when it finishes.
The chat and embedding routes and a batch's dispatch (`jobs.batches`) reserve alike.
"""

from __future__ import annotations

from typing import Any

BYTES_PER_TOKEN = 4
# The fields of a chat body whose text the provider reads as prompt.
CHAT_PROMPT_FIELDS = ("messages", "tools", "functions", "prompt")


def tokens_of_bytes(n: int) -> int:
    return -(-n // BYTES_PER_TOKEN)


def text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in `value` (walked without recursion: depth is no risk);
    an integer (a token id of a token array) counts as one token's bytes."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += BYTES_PER_TOKEN
    return total


def chat_prompt_tokens(request: dict[str, Any]) -> int:
    """The estimated prompt tokens of a chat body as it goes to the provider."""
    return tokens_of_bytes(sum(text_bytes(request.get(name)) for name in CHAT_PROMPT_FIELDS))


def input_tokens(value: Any) -> int:
    """The estimated tokens of an embeddings `input` (strings, or token arrays)."""
    return tokens_of_bytes(text_bytes(value))
