"""`switchyard`: up (everything), web, worker, status, doctor, migrate, keys, users, webhooks;
batch and jobs (a client of a running server, `switchyard.client_cli`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from switchyard import users_cli
from switchyard.errors import ConfigError
from switchyard.settings import get_settings, settings_problems

if TYPE_CHECKING:
    from switchyard.metrics import Snapshot

DEFAULT_PROCESSES = {
    "web": "switchyard web",
    "worker": "switchyard worker --queue interactive",
    "batch": "switchyard worker --queue batch",
    "media": "switchyard worker --queue media,media-batch",
    "webhooks": "switchyard webhooks",
}


def _processes(procfile: Path) -> dict[str, str]:
    if not procfile.exists():
        return dict(DEFAULT_PROCESSES)
    procs = {}
    for line in procfile.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            procs[name.strip()] = command.strip()
    return procs


def _concurrency(spec: str | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in (spec or "").split(","):
        if part.strip():
            name, _, n = part.partition("=")
            counts[name.strip()] = int(n)
    return counts


def _warn_durability(url: str | None) -> None:
    """Say before anything starts what a restart of this Redis would lose (jobs/durability.py)."""
    if not url:
        return
    import asyncio

    from jobs.durability import check
    from switchyard import redis_client

    async def run() -> None:
        try:
            async with redis_client.connect(url, socket_connect_timeout=2, socket_timeout=2) as redis:
                warnings = (await check(redis)).warnings
        except Exception as exc:  # noqa: BLE001 (start goes on; the processes report Redis' state)
            warnings = [f"could not check Redis persistence ({exc.__class__.__name__})"]
        for warning in warnings:
            print(f"switchyard: WARNING: {warning}", file=sys.stderr, flush=True)

    asyncio.run(run())


def cmd_up(args: argparse.Namespace) -> int:
    """Embedded Redis when REDIS_URL is unset, migrations, then every Procfile process under honcho.

    On Ctrl-C or SIGTERM honcho sends SIGTERM to each process and waits the shutdown grace + 5 s
    before a SIGKILL; the embedded Redis (in a session of its own, so Ctrl-C does not reach it)
    is stopped last, once nothing uses it.
    """
    import honcho.manager
    from honcho.manager import Manager

    from storage.migrate import upgrade
    from switchyard.redis_server import EmbeddedRedis

    settings = get_settings()
    try:
        from switchyard.providers import load_providers

        load_providers(settings.providers_file)
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    # The Procfile names `switchyard`: make it the one this interpreter runs, venv activated or not.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        env["REDIS_URL"] = embedded.url
        print(f"switchyard: embedded Redis on {embedded.url} (data in {embedded.data_dir})", flush=True)
    _warn_durability(env["REDIS_URL"] if "REDIS_URL" in env else settings.redis_url)
    try:
        upgrade(settings.database_url_or_default)
        print(f"switchyard: database ready ({settings.database_url_or_default.split('://')[0]})", flush=True)
        counts = _concurrency(args.concurrency)
        # honcho reads its SIGKILL delay from this module global (5 s by default): the workers'
        # documented grace comes first.
        honcho.manager.KILL_WAIT = int(math.ceil(settings.worker_shutdown_grace_s)) + 5
        manager = Manager()
        for name, command in _processes(Path(args.procfile)).items():
            for i in range(counts.get(name, 1)):
                manager.add_process(f"{name}.{i + 1}", command, env=env, quiet=False)
        print(f"switchyard: http://{settings.host}:{settings.port}", flush=True)
        manager.loop()
        return manager.returncode or 0
    finally:
        if embedded is not None:
            embedded.stop()
            print("switchyard: embedded Redis stopped", flush=True)


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=settings.web_workers,
        loop="uvloop",
        http="httptools",
        # websockets' own protocol; uvicorn's older binding to it is deprecated by websockets 14
        ws="websockets-sansio" if "websockets-sansio" in uvicorn.config.WS_PROTOCOLS else "auto",
        log_level="warning",
        log_config=None,  # uvicorn's records go to the handler switchyard.logs set up
        access_log=False,  # api.request_log writes one line per request
        proxy_headers=False,  # a middleware per request for nothing unless behind a proxy
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.settings import run_worker

    run_worker(args.queue)
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from api.deliverer import run_deliverer

    asyncio.run(run_deliverer(get_settings()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Queues, workers, persister lag and dead letters, read from Redis (`switchyard.metrics`)."""
    from switchyard import metrics, redis_client

    settings = get_settings()
    if not settings.redis_url:
        print("switchyard: REDIS_URL is not set (the URL `switchyard up` printed at start)", file=sys.stderr)
        return 2

    async def read() -> Snapshot:
        url = settings.redis_url or ""
        async with redis_client.connect(url, socket_connect_timeout=3, socket_timeout=5) as redis:
            return await metrics.scrape(redis, counters=False)

    try:
        snap = asyncio.run(read())
    except Exception as exc:  # noqa: BLE001 (the operator gets one line, not a traceback)
        print(f"switchyard: cannot read Redis ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(metrics.status_view(snap), indent=2))
    else:
        print(status_table(snap))
    return 0


def status_table(snap: Snapshot) -> str:
    from switchyard.metrics import WORKER_SEEN_S, status_view

    view = status_view(snap)

    def age(v: object) -> str:
        return "-" if v is None else f"{v:.1f}s"

    lines = [f"{'QUEUE':<14}{'WAITING':>9}{'RUNNING':>9}{'OLDEST':>10}"]
    for q in view["queues"]:
        lines.append(f"{q['queue']:<14}{q['waiting']:>9}{q['running']:>9}{age(q['oldest_age_s']):>10}")
    workers = view["workers"]
    lines += ["", f"WORKERS ({len(workers)} seen in the last {WORKER_SEEN_S:g}s)"]
    for w in workers:
        where = f"{w.get('host', '?')}:{w.get('pid', '?')}"
        lines.append(
            f"  {where}  {w.get('queues', '?'):<20} running {w.get('running', 0):>4}"
            f"  done {w.get('jobs_complete', 0)}  failed {w.get('jobs_failed', 0)}"
            f"  seen {w['seen_s_ago']}s ago"
        )
    lines += ["", f"{'PERSIST LAG':<20}{'JOBS':>9}{'OLDEST':>10}"]
    for p in view["persist"]:
        lines.append(f"{p['set']:<20}{p['jobs']:>9}{age(p['oldest_age_s']):>10}")
    lines += ["", f"DEAD LETTERS  {view['dead_letters']}"]
    cooling = view["providers_cooling_down"]
    lines.append(f"COOLING DOWN  {', '.join(cooling) if cooling else '-'}")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Redis, clocks, database and migrations, blob store, providers: ok, warn or fail each."""
    from switchyard import doctor

    checks = asyncio.run(doctor.run_checks(get_settings(), args.timeout))
    print(json.dumps(doctor.as_json(checks), indent=2) if args.json else doctor.table(checks))
    return 1 if doctor.failed(checks) else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url_or_default)
    print("migrations applied")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import msgspec

    from storage.db import Database
    from storage.keys import (
        MAX_CREDITS,
        MAX_LIMIT,
        KeyLimits,
        create_key,
        list_keys,
        revoke_key,
        webhook_secret,
    )
    from storage.migrate import upgrade
    from switchyard.errors import InvalidRequest
    from switchyard.urls import check_url

    settings = get_settings()
    upgrade(settings.database_url_or_default)

    async def run() -> int:
        db = Database(settings.database_url_or_default)
        try:
            if args.action == "create":
                if args.credits is not None and not 0 <= args.credits <= MAX_CREDITS:
                    print(f"switchyard: --credits: must be from 0 to {MAX_CREDITS}", file=sys.stderr)
                    return 2
                try:
                    expires = datetime.fromisoformat(args.expires_at) if args.expires_at else None
                except ValueError as exc:
                    print(f"switchyard: --expires-at: {exc}", file=sys.stderr)
                    return 2
                if expires is not None and expires.tzinfo is None:
                    expires = expires.replace(tzinfo=UTC)
                if expires is not None and expires <= datetime.now(UTC):
                    print("switchyard: --expires-at: must be in the future", file=sys.stderr)
                    return 2
                try:
                    limits = msgspec.convert(json.loads(args.limits), KeyLimits) if args.limits else None
                except (ValueError, RecursionError, msgspec.ValidationError) as exc:
                    print(f"switchyard: --limits: {exc}", file=sys.stderr)
                    return 2
                over = limits.over_maximum() if limits else None
                if over is not None:
                    print(f"switchyard: --{over}: must be at most {MAX_LIMIT}", file=sys.stderr)
                    return 2
                models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
                if args.webhook_url:
                    try:
                        check_url(
                            args.webhook_url, allow_private=settings.allow_private_urls, field="webhook_url"
                        )
                    except InvalidRequest as exc:
                        print(f"switchyard: --webhook-url: {exc.message}", file=sys.stderr)
                        return 2
                record, secret = await create_key(
                    db,
                    args.name,
                    expires,
                    limits=limits,
                    models=models,
                    credits=args.credits,
                    allow_upstream_override=args.allow_upstream_override,
                    webhook_url=args.webhook_url,
                )
                print(f"{record.id}  {record.name}\n{secret}\n(the key is shown once: store it now)")
                signing = await webhook_secret(db, record.id)
                rotate = f"POST /api/keys/{record.id}/webhook-secret"
                print(f"webhook signing secret: {signing}\n(shown once; {rotate} makes a new one)")
            elif args.action == "list":
                for r in await list_keys(db):
                    state = "revoked" if r.revoked else ("expired" if r.expired else "active")
                    print(f"{r.id}  {r.prefix}…  {state:8}  {r.created_at:%Y-%m-%d %H:%M}  {r.name}")
            else:
                if await revoke_key(db, args.key_id) is None:
                    print(f"no active key {args.key_id}", file=sys.stderr)
                    return 1
                print(f"revoked {args.key_id}")
            return 0
        finally:
            await db.dispose()

    return asyncio.run(run())


def _worker_queues(value: str) -> str:
    from jobs import queues

    names = [q.strip() for q in value.split(",") if q.strip()]
    for name in names:
        if name not in queues.QUEUES:
            raise argparse.ArgumentTypeError(f"unknown queue {name!r}; queues: {', '.join(queues.QUEUES)}")
    if not names or any(q not in queues.lane_of(names[0]) for q in names):
        raise argparse.ArgumentTypeError("give one queue, or queues of one lane (e.g. media,media-batch)")
    return ",".join(names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="embedded Redis if needed, migrations, web and workers")
    up.add_argument("--procfile", default="Procfile")
    up.add_argument("-c", "--concurrency", help="processes per type, e.g. worker=4,batch=2")
    up.set_defaults(func=cmd_up)
    web = sub.add_parser("web", help="the HTTP API")
    web.add_argument("--host")
    web.add_argument("--port", type=int)
    web.set_defaults(func=cmd_web)
    worker = sub.add_parser("worker", help="a worker process")
    worker.add_argument(
        "--queue",
        default="interactive",
        type=_worker_queues,
        help="interactive, batch, media, media-batch, or queues of one lane joined by commas",
    )
    worker.set_defaults(func=cmd_worker)
    status = sub.add_parser("status", help="queues, workers, persister lag and dead letters (from Redis)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)
    doctor = sub.add_parser("doctor", help="check Redis, clocks, database, blob store and providers")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of a table")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds each check may take (5)")
    doctor.set_defaults(func=cmd_doctor)
    sub.add_parser("webhooks", help="the webhook deliverer (its own queue, apart from jobs)").set_defaults(
        func=cmd_webhooks
    )
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--expires-at", help="ISO 8601 date-time (UTC when no offset)")
    create.add_argument("--credits", type=int, help="credit balance; omitted: not credit-metered")
    create.add_argument("--limits", help='JSON, e.g. \'{"hourly": 500, "per_minute": {"chat": 120}}\'')
    create.add_argument("--models", help="comma-separated model ids the key may use; omitted: all")
    create.add_argument(
        "--allow-upstream-override",
        action="store_true",
        help="the key may name its own upstream per call (X-OpenAI-Base-URL / X-OpenAI-Key)",
    )
    create.add_argument(
        "--webhook-url", help="where this key's jobs report when they finish, unless they name a URL"
    )
    keys_sub.add_parser("list")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)
    users_cli.add_parser(sub)
    from switchyard.client_cli import add_client_commands

    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("up", "web", "worker", "webhooks"):  # long-running processes: structured logs
        from switchyard import logs

        logs.configure_from_env()
    else:  # a command run by hand (or in a test's process): plain lines, the root left as it is
        logging.basicConfig(
            level=os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO").upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("httpx", "httpcore", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command in ("up", "web", "worker", "webhooks"):
        problems = settings_problems(get_settings())
        for problem in problems:
            print(f"switchyard: {problem}", file=sys.stderr)
        if problems:
            return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
