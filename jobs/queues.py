"""Queue names, priorities and the Redis keys a job lives under.

The ARQ keys (`arq:job:`, `arq:in-progress:`, `arq:retry:`, `arq:abort`) are ARQ's own, so ARQ
tooling still sees our jobs; the `sy:` keys are Switchyard's job state beside them.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

INTERACTIVE = "interactive"
BATCH = "batch"
PRIORITIES: tuple[str, ...] = (INTERACTIVE, BATCH)  # highest first

# A lane is a set of queues served by workers of their own, so with slots of their own: a wave
# of downloads on the media lane cannot hold the slots chat jobs run in. A lane's queues are
# its priorities' queues, highest first; the default lane's queues are named after them.
DEFAULT_LANE, MEDIA_LANE = "default", "media"
MEDIA, MEDIA_BATCH = "media", "media-batch"
LANES: dict[str, tuple[str, ...]] = {DEFAULT_LANE: (INTERACTIVE, BATCH), MEDIA_LANE: (MEDIA, MEDIA_BATCH)}
QUEUES: tuple[str, ...] = tuple(q for lane in LANES.values() for q in lane)

QUEUE_PREFIX = "switchyard:queue:"


def queue_for(priority: str, lane: str = DEFAULT_LANE) -> str:
    """The queue (short name) a job of this priority waits in on this lane."""
    return LANES[lane][PRIORITIES.index(priority)]


def lane_of(queue: str) -> tuple[str, ...]:
    """The queues of the lane `queue` belongs to, highest priority first."""
    for lane in LANES.values():
        if queue in lane:
            return lane
    raise ValueError(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}")


def priority_of(queue: str) -> str:
    """The priority of a queue (short name): its place in its lane."""
    return PRIORITIES[lane_of(queue).index(queue)]


def persist_set(priority: str) -> str:
    """The set a finished job of this priority waits in to be written to the database."""
    return PERSIST_SET if priority == INTERACTIVE else f"{PERSIST_SET}:{priority}"


def queue_name(queue: str) -> str:
    return QUEUE_PREFIX + queue


def wake_channel(queue: str) -> str:
    return WAKE_CHANNEL_PREFIX + queue


JOB_KEY = job_key_prefix
IN_PROGRESS_KEY = in_progress_key_prefix
RETRY_KEY = retry_key_prefix

STATE_KEY = "sy:job:"  # hash: the job's live state and, once finished, its result
OWNER_KEY = "sy:owner:"  # zset per key: jobs not yet written to the database
# zsets by priority (`persist_set`): finished jobs waiting to be written to the database, so
# that a worker writes the rows of its own priority and an interactive worker never spends
# its loop on a batch drain's rows (unless they wait long: `workers.persist`)
PERSIST_SET = "sy:persist"
WAKE_CHANNEL_PREFIX = "sy:wake:"  # pub/sub per queue: new work on it
CANCEL_CHANNEL = "sy:cancel"  # pub/sub: the id of a running job to abort
PERSIST_CHANNEL = "sy:persist-now"  # pub/sub: jobs were put back in a persist set (a retry)
DONE_CHANNEL_PREFIX = "sy:done:"  # pub/sub per web process: finished jobs it waits for
LAST_USED_KEY = "sy:key:last-used"  # hash key id -> ms

ARQ_JOB_TTL_MS = 86_400_000
