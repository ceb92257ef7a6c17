"""Every metric Switchyard exports, by name, and where each one's number comes from.

Nothing here is counted per process: a gateway runs many web and worker processes on several
machines, and `/metrics` on any web process must give the whole system's numbers. So:

- Counters that must be exact live in Redis hashes (`sy:metrics:*`), bumped where the event
  already has its Redis command: a job created by the SUBMIT script (one HINCRBY), a refusal by
  admission on SUBMIT's refusal path, a provider failure in the pipeline that counts its failures
  in a row. Finished jobs, their credits and the duration/wait histograms are counted by the
  persister in the same MULTI that acknowledges a written batch (`workers.persist`): one
  transaction per batch of up to 500 jobs, nothing on the job's own path, and a job is counted
  once because the count and its removal from the persist set happen together.
- Histograms are bucket counters in such hashes (non-cumulative per bucket; made cumulative at
  scrape time), not prometheus-client's multiprocess files: those only see one machine.
- Gauges are read from Redis at scrape time (`scrape`): queue depth and the oldest waiting job's
  age, jobs waiting for the database (persister lag), dead letters, provider cooldowns and the
  workers' heartbeats.

prometheus-client renders the families (`render`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# --- metric names (the Grafana dashboard in deploy/ uses these) ---------------------------------
JOBS_CREATED = "switchyard_jobs_created"  # counter {kind, priority}
JOBS_FINISHED = "switchyard_jobs_finished"  # counter {kind, priority, status, provider}
CREDITS_CHARGED = "switchyard_credits_charged"  # counter {kind, priority}: net of refunds
ADMISSION_REFUSALS = "switchyard_admission_refusals"  # counter {reason}: 429 limits and 402 credits
PROVIDER_ERRORS = "switchyard_provider_errors"  # counter {provider}: failed calls (5xx, timeouts...)
JOB_WAIT = "switchyard_job_wait_seconds"  # histogram {kind, priority}: created -> started
JOB_RUN = "switchyard_job_run_seconds"  # histogram {kind, priority, provider}: started -> finished
QUEUE_DEPTH = "switchyard_queue_depth"  # gauge {queue}: jobs waiting (not running)
QUEUE_RUNNING = "switchyard_queue_running"  # gauge {queue}: jobs a worker holds
QUEUE_OLDEST_AGE = "switchyard_queue_oldest_age_seconds"  # gauge {queue}: the oldest waiting job's
PERSIST_LAG_JOBS = "switchyard_persist_lag_jobs"  # gauge {set}: finished jobs not yet in the database
PERSIST_LAG_AGE = "switchyard_persist_lag_oldest_age_seconds"  # gauge {set}
DEAD_LETTERS = "switchyard_dead_letters"  # gauge
PROVIDER_COOLDOWN = "switchyard_provider_cooldown"  # gauge {provider}: 1 while cooling down
WORKERS = "switchyard_workers"  # gauge {queues}: worker processes seen within WORKER_SEEN_S
WEBHOOK_DELIVERIES = "switchyard_webhook_deliveries"  # counter {outcome}: delivery attempts

# --- where they live in Redis -------------------------------------------------------------------
KEY_PREFIX = "sy:metrics:"
CREATED_KEY = KEY_PREFIX + "created"  # "kind|priority"
REFUSED_KEY = KEY_PREFIX + "refused"  # "reason"
FINISHED_KEY = KEY_PREFIX + "finished"  # "kind|priority|status|provider"
CREDITS_KEY = KEY_PREFIX + "credits"  # "kind|priority"
PROVIDER_ERRORS_KEY = KEY_PREFIX + "provider-errors"  # "provider"
WAIT_KEY = KEY_PREFIX + "wait"  # "kind|priority|<bucket index>|" ("sum" for the bucket: the sum, ms)
RUN_KEY = KEY_PREFIX + "run"  # "kind|priority|<bucket index>|provider"
WEBHOOKS_KEY = KEY_PREFIX + "webhooks"  # "outcome": delivered, retrying, failed, gone, refused
WORKERS_KEY = "sy:workers"  # zset: worker id -> last heartbeat (ms)
WORKER_INFO_KEY = "sy:workers:info"  # hash: worker id -> JSON (host, pid, queues, jobs, started)
WORKER_HEARTBEAT_S = 10.0
WORKER_SEEN_S = 3 * WORKER_HEARTBEAT_S

SEP = "|"
# Upper bounds (seconds) shared by both histograms: a cached chat call to a media download.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_BUCKETS_MS = [b * 1000 for b in BUCKETS]


def bucket_index(ms: float) -> int:
    """The index of the first bucket `ms` fits in; len(BUCKETS) for +Inf."""
    for i, bound in enumerate(_BUCKETS_MS):
        if ms <= bound:
            return i
    return len(BUCKETS)


@dataclass(slots=True)
class FinishedBatch:
    """What one persisted batch adds to the counters, summed in the process first so that the
    batch costs a handful of HINCRBYs however many jobs it holds."""

    counts: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, key: str, fld: str, n: float) -> None:
        h = self.counts[key]
        h[fld] = h.get(fld, 0) + n

    def job(
        self,
        *,
        kind: str,
        priority: str,
        status: str,
        provider: str | None,
        created_ms: int,
        started_ms: int | None,
        finished_ms: int | None,
        credits: int,
    ) -> None:
        prov = provider or ""
        self.add(FINISHED_KEY, SEP.join((kind, priority, status, prov)), 1)
        if credits:
            self.add(CREDITS_KEY, SEP.join((kind, priority)), credits)
        if started_ms is not None:
            wait = max(0, started_ms - created_ms)
            self.add(WAIT_KEY, SEP.join((kind, priority, str(bucket_index(wait)), "")), 1)
            self.add(WAIT_KEY, SEP.join((kind, priority, "sum", "")), wait)
            if finished_ms is not None:
                run = max(0, finished_ms - started_ms)
                self.add(RUN_KEY, SEP.join((kind, priority, str(bucket_index(run)), prov)), 1)
                self.add(RUN_KEY, SEP.join((kind, priority, "sum", prov)), run)

    def queue(self, pipe: Any) -> None:
        """Add the increments to a (transaction) pipeline."""
        for key, fields in self.counts.items():
            for fld, n in fields.items():
                if isinstance(n, float) and not n.is_integer():
                    pipe.hincrbyfloat(key, fld, n)
                else:
                    pipe.hincrby(key, fld, int(n))


# --- scrape ---------------------------------------------------------------------------------------
# Per queue: {waiting, running, oldest waiting score or false}. Jobs stay in their queue while they
# run: the first `scan` entries are checked for ARQ's in-progress lease (running jobs are at the
# front, as they were the oldest ready ones). ARGV: scan, then queue keys.
QUEUE_GAUGES = r"""
local scan = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local q = ARGV[i]
  local total = redis.call('ZCARD', q)
  local ids = redis.call('ZRANGE', q, 0, scan - 1, 'WITHSCORES')
  local running, oldest = 0, false
  for j = 1, #ids, 2 do
    if redis.call('EXISTS', 'arq:in-progress:' .. ids[j]) == 1 then
      running = running + 1
    elseif not oldest then
      oldest = ids[j + 1]
    end
  end
  out[#out + 1] = {total - running, running, oldest}
end
return out
"""


@dataclass(slots=True)
class Snapshot:
    """What `/metrics` and `switchyard status` read from Redis, at one moment."""

    now_ms: int
    queues: dict[str, tuple[int, int, float | None]]  # name -> waiting, running, oldest age s
    persist: dict[str, tuple[int, float | None]]  # set -> jobs, oldest age s
    dead_letters: int
    cooling: list[str]
    workers: list[dict[str, Any]]  # seen recently: id, seen_s_ago, and the info the worker wrote
    hashes: dict[str, dict[str, float]]


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _num(v: Any) -> float:
    n = float(_s(v))
    return int(n) if n.is_integer() else n


async def scrape(redis: Any, *, counters: bool = True, scan: int = 1000) -> Snapshot:
    """Read every gauge (and, with `counters`, every counter hash) from Redis."""
    import orjson

    from jobs import queues
    from jobs.deadletters import INDEX_KEY
    from jobs.discovery import COOLDOWN_KEY

    now = int(time.time() * 1000)
    names = list(queues.QUEUES)
    persist_sets = [queues.persist_set(p) for p in queues.PRIORITIES]
    gauges = await redis.eval(QUEUE_GAUGES, 0, scan, *(queues.queue_name(q) for q in names))
    hash_keys = [CREATED_KEY, REFUSED_KEY, FINISHED_KEY, CREDITS_KEY, PROVIDER_ERRORS_KEY, WAIT_KEY, RUN_KEY]
    hash_keys.append(WEBHOOKS_KEY)
    async with redis.pipeline(transaction=False) as pipe:
        for s in persist_sets:
            pipe.zcard(s)
            pipe.zrange(s, 0, 0, withscores=True)
        pipe.zcard(INDEX_KEY)
        pipe.zrangebyscore(WORKERS_KEY, now - int(WORKER_SEEN_S * 1000), "+inf", withscores=True)
        pipe.hgetall(WORKER_INFO_KEY)
        if counters:
            for k in hash_keys:
                pipe.hgetall(k)
        replies = await pipe.execute()
    cooling = []
    async for key in redis.scan_iter(match=COOLDOWN_KEY + "*", count=1000):
        cooling.append(_s(key).removeprefix(COOLDOWN_KEY))
    qs: dict[str, tuple[int, int, float | None]] = {}
    for name, (waiting, running, oldest) in zip(names, gauges, strict=True):
        age = max(0.0, (now - float(oldest)) / 1000) if oldest else None
        qs[name] = (int(waiting), int(running), age)
    persist: dict[str, tuple[int, float | None]] = {}
    for i, s in enumerate(persist_sets):
        n, first = replies[2 * i], replies[2 * i + 1]
        persist[s] = (int(n), max(0.0, (now - float(first[0][1])) / 1000) if first else None)
    rest = replies[2 * len(persist_sets) :]
    dead, seen, info = int(rest[0]), rest[1], rest[2]
    workers = []
    for member, score in seen:
        wid = _s(member)
        try:
            details = orjson.loads(info.get(member) or b"{}")
        except orjson.JSONDecodeError:
            details = {}
        workers.append({"id": wid, "seen_s_ago": round(max(0.0, (now - score) / 1000), 1), **details})
    hashes: dict[str, dict[str, float]] = {}
    if counters:
        for k, h in zip(hash_keys, rest[3:], strict=True):
            hashes[k] = {_s(f): _num(v) for f, v in h.items()}
    return Snapshot(now, qs, persist, dead, sorted(cooling), workers, hashes)


def status_view(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as `switchyard status --json` prints it and the admin overview shows it."""
    return {
        "queues": [
            {"queue": q, "waiting": w, "running": r, "oldest_age_s": None if a is None else round(a, 3)}
            for q, (w, r, a) in snap.queues.items()
        ],
        "workers": snap.workers,
        "persist": [
            {"set": s, "jobs": n, "oldest_age_s": None if a is None else round(a, 3)}
            for s, (n, a) in snap.persist.items()
        ],
        "dead_letters": snap.dead_letters,
        "providers_cooling_down": snap.cooling,
    }


def _split(fld: str, n: int) -> list[str]:
    parts = fld.split(SEP, n - 1)
    return parts + [""] * (n - len(parts))


def _histogram(name: str, doc: str, h: dict[str, float], with_provider: bool) -> HistogramMetricFamily:
    labels = ["kind", "priority", "provider"] if with_provider else ["kind", "priority"]
    series: dict[tuple[str, ...], tuple[list[float], float]] = {}
    for fld, n in h.items():
        kind, priority, idx, prov = _split(fld, 4)
        key: tuple[str, ...] = (kind, priority, prov) if with_provider else (kind, priority)
        counts, total = series.get(key, ([0.0] * (len(BUCKETS) + 1), 0.0))
        if idx == "sum":
            total += n
        elif idx.isdigit() and int(idx) <= len(BUCKETS):
            counts[int(idx)] += n
        series[key] = (counts, total)
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, (counts, total_ms) in sorted(series.items()):
        cumulative, buckets = 0.0, []
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        family.add_metric(list(key), buckets, total_ms / 1000)
    return family


def families(snap: Snapshot) -> Iterable[Any]:
    h = snap.hashes
    created = CounterMetricFamily(JOBS_CREATED, "Jobs accepted onto a queue.", labels=["kind", "priority"])
    for fld, n in sorted(h.get(CREATED_KEY, {}).items()):
        created.add_metric(_split(fld, 2), n)
    yield created
    finished = CounterMetricFamily(
        JOBS_FINISHED,
        "Jobs finished (written to the database), by outcome and the provider that served them.",
        labels=["kind", "priority", "status", "provider"],
    )
    for fld, n in sorted(h.get(FINISHED_KEY, {}).items()):
        finished.add_metric(_split(fld, 4), n)
    yield finished
    credits = CounterMetricFamily(
        CREDITS_CHARGED, "Credits charged, net of refunds.", labels=["kind", "priority"]
    )
    for fld, n in sorted(h.get(CREDITS_KEY, {}).items()):
        credits.add_metric(_split(fld, 2), n)
    yield credits
    refused = CounterMetricFamily(
        ADMISSION_REFUSALS, "Submissions refused by a rate limit (429) or credits (402).", labels=["reason"]
    )
    for fld, n in sorted(h.get(REFUSED_KEY, {}).items()):
        refused.add_metric([fld], n)
    yield refused
    errors = CounterMetricFamily(PROVIDER_ERRORS, "Failed provider calls.", labels=["provider"])
    for fld, n in sorted(h.get(PROVIDER_ERRORS_KEY, {}).items()):
        errors.add_metric([fld], n)
    yield errors
    webhooks = CounterMetricFamily(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by outcome (delivered, retrying, failed, gone: a 410 stopped it).",
        labels=["outcome"],
    )
    for fld, n in sorted(h.get(WEBHOOKS_KEY, {}).items()):
        webhooks.add_metric([fld], n)
    yield webhooks
    yield _histogram(JOB_WAIT, "Time from a job's creation to its first start.", h.get(WAIT_KEY, {}), False)
    yield _histogram(
        JOB_RUN,
        "Time from a job's start to its end (its provider calls included): provider latency as jobs see it.",
        h.get(RUN_KEY, {}),
        True,
    )
    yield from gauge_families(snap)


def gauge_families(snap: Snapshot) -> Iterable[Any]:
    depth = GaugeMetricFamily(QUEUE_DEPTH, "Jobs waiting in a queue (not running).", labels=["queue"])
    running = GaugeMetricFamily(QUEUE_RUNNING, "Jobs of a queue a worker is running.", labels=["queue"])
    oldest = GaugeMetricFamily(QUEUE_OLDEST_AGE, "Age of the oldest waiting job (0: none).", labels=["queue"])
    for q, (waiting, run, age) in snap.queues.items():
        depth.add_metric([q], waiting)
        running.add_metric([q], run)
        oldest.add_metric([q], age or 0.0)
    yield from (depth, running, oldest)
    lag = GaugeMetricFamily(
        PERSIST_LAG_JOBS, "Finished jobs waiting to be written to the database.", labels=["set"]
    )
    lag_age = GaugeMetricFamily(PERSIST_LAG_AGE, "Age of the oldest of them (0: none).", labels=["set"])
    for s, (n, age) in snap.persist.items():
        lag.add_metric([s], n)
        lag_age.add_metric([s], age or 0.0)
    yield from (lag, lag_age)
    yield GaugeMetricFamily(
        DEAD_LETTERS, "Records set aside for an admin (/api/admin/dead-letters).", value=snap.dead_letters
    )
    cool = GaugeMetricFamily(
        PROVIDER_COOLDOWN, "1 while a provider cools down after failures.", labels=["provider"]
    )
    for name in snap.cooling:
        cool.add_metric([name], 1)
    yield cool
    workers = GaugeMetricFamily(WORKERS, "Worker processes with a recent heartbeat.", labels=["queues"])
    by_queues: dict[str, int] = defaultdict(int)
    for w in snap.workers:
        by_queues[str(w.get("queues", ""))] += 1
    for qs, n in sorted(by_queues.items()):
        workers.add_metric([qs], n)
    yield workers


class _Once(Collector):
    def __init__(self, fams: Sequence[Any]) -> None:
        self.fams = fams

    def collect(self) -> Iterable[Any]:
        return iter(self.fams)


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of a snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Once(list(families(snap))))
    return generate_latest(registry)
