"""Queue names, priorities and the Redis keys a job lives under.

The ARQ keys (`arq:job:`, `arq:in-progress:`, `arq:retry:`, `arq:abort`) are ARQ's own, so ARQ
tooling still sees our jobs; the `sy:` keys are Switchyard's job state beside them.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

INTERACTIVE = "interactive"
BATCH = "batch"
PRIORITIES: tuple[str, ...] = (INTERACTIVE, BATCH)  # highest first

QUEUE_PREFIX = "switchyard:queue:"


def queue_name(priority: str) -> str:
    return QUEUE_PREFIX + priority


def wake_channel(priority: str) -> str:
    return WAKE_CHANNEL_PREFIX + priority


JOB_KEY = job_key_prefix
IN_PROGRESS_KEY = in_progress_key_prefix
RETRY_KEY = retry_key_prefix

STATE_KEY = "sy:job:"  # hash: the job's live state and, once finished, its result
OWNER_KEY = "sy:owner:"  # zset per key: jobs not yet written to the database
PERSIST_SET = "sy:persist"  # zset: finished jobs waiting to be written to the database
WAKE_CHANNEL_PREFIX = "sy:wake:"  # pub/sub per priority: new work on that queue
CANCEL_CHANNEL = "sy:cancel"  # pub/sub: the id of a running job to abort
DONE_CHANNEL_PREFIX = "sy:done:"  # pub/sub per web process: finished jobs it waits for
LAST_USED_KEY = "sy:key:last-used"  # hash key id -> ms

ARQ_JOB_TTL_MS = 86_400_000
