"""Every Redis client Switchyard makes, from `REDIS_URL`: a plain Redis or one behind Sentinel.

`REDIS_URL` is either redis-py's own form (`redis://`, `rediss://`, `unix://`) or

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]

the form of the `Redis-Sentinel-Url` package and of prefect-redis: the hosts are the Sentinels
(port 26379 unless given), `service` is the master's name in their `sentinel monitor` line,
`db` the database number (0), the password the one of the master and its replicas, and
`sentinel_password` the Sentinels' own when they have one.

A Sentinel client asks the Sentinels where the master is when it opens a connection, and again
after a connection fails or the server answers READONLY (redis-py's `SentinelConnectionPool`):
after a failover, new commands go to the promoted replica; the commands in flight when the old
master died fail (the request path answers 503) and nothing is retried blindly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from urllib.parse import parse_qs, unquote

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from switchyard.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
# A Sentinel that does not answer within this long is skipped for the next one (every lookup of
# the master goes through them; the web process bounds its own waits on top of this).
SENTINEL_TIMEOUT_S = 2.0

R = TypeVar("R", bound=Redis)


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def __str__(self) -> str:
        """The URL with its passwords left out (for logs and `switchyard doctor`)."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        auth = "***@" if self.password else ""
        return f"{SENTINEL_SCHEME}{auth}{hosts}/{self.service}/{self.db}"


def is_sentinel(url: str) -> bool:
    return url[: len(SENTINEL_SCHEME)].lower() == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; ConfigError naming what is wrong."""
    if not is_sentinel(url):
        raise ConfigError(f"REDIS_URL: not a {SENTINEL_SCHEME} URL")
    rest = url[len(SENTINEL_SCHEME) :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, _, pw = userinfo.partition(":")  # as redis-py reads redis://user:password@host
        username, password = unquote(user) or None, unquote(pw) or None
    sentinels = tuple(_host_port(part) for part in hostlist.split(","))
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ConfigError(
            f"REDIS_URL: {SENTINEL_SCHEME} needs the master's name after the hosts,"
            " e.g. redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster"
        )
    if len(parts) > 2:
        raise ConfigError(f"REDIS_URL: the path is /service[/db], not /{'/'.join(parts)}")
    db = 0
    if len(parts) == 2:
        if not (parts[1].isascii() and parts[1].isdigit()):
            raise ConfigError(f"REDIS_URL: the database number must be a whole number, not {parts[1]!r}")
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ConfigError(
            f"REDIS_URL: unknown option(s) {', '.join(unknown)} (a sentinel URL takes sentinel_password only)"
        )
    sentinel_password = options.get("sentinel_password", [None])[-1] or None
    return SentinelUrl(sentinels, unquote(parts[0]), db, username, password, sentinel_password)


def _host_port(part: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, after = part[1:].partition("]")
        port_text = after.removeprefix(":")
    elif part.count(":") == 1:
        host, _, port_text = part.partition(":")
    else:
        host, port_text = part, ""
    if not host:
        raise ConfigError(f"REDIS_URL: a sentinel address is empty ({part!r}); hosts are separated by commas")
    if not port_text:
        return host, SENTINEL_PORT
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"REDIS_URL: the port of sentinel {host} must be 1-65535, not {port_text!r}")
    return host, int(port_text)


def url_problem(url: str | None) -> str | None:
    """Why `REDIS_URL` cannot be used, in one sentence (None: it can), for `settings_problems`."""
    if not url:
        return None
    if is_sentinel(url):
        try:
            parse_sentinel_url(url)
        except ConfigError as exc:
            return str(exc)
        return None
    if not url.lower().startswith(("redis://", "rediss://", "unix://")):
        return (
            "REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel:// "
            f"(got {url.split('://')[0]}://...)"
        )
    return None


class _SentinelPool(SentinelConnectionPool):
    """redis-py's pool, which also closes its connections to the Sentinels when it is closed.

    A full `disconnect()` (the client's `aclose()`) closes them; the one redis-py makes when the
    master moved (`inuse_connections=False`) leaves them, as they are about to be asked again.
    A pool made by `dedicated` shares its owner's Sentinels and leaves them to it.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, *, owns_sentinels: bool, **kwargs: Any):
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.owns_sentinels = owns_sentinels

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections and self.owns_sentinels:
            for sentinel in self.sentinel_manager.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()


@overload
def connect(url: str, *, redis_class: type[R], **kwargs: Any) -> R: ...
@overload
def connect(url: str, **kwargs: Any) -> Redis: ...


def connect(url: str, *, redis_class: type[Redis] = Redis, **kwargs: Any) -> Redis:
    """A client of `url` (plain or `redis+sentinel://`); `kwargs` are redis-py connection options
    (`socket_connect_timeout`, `socket_timeout`, `socket_keepalive`, `health_check_interval`, ...).
    Connections open on first use. The caller closes it (`aclose()`), which closes its pool."""
    if not is_sentinel(url):
        return redis_class.from_url(url, **kwargs)
    target = parse_sentinel_url(url)
    connect_timeout = kwargs.get("socket_connect_timeout") or SENTINEL_TIMEOUT_S
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": min(connect_timeout, SENTINEL_TIMEOUT_S),
        "socket_timeout": min(kwargs.get("socket_timeout") or SENTINEL_TIMEOUT_S, SENTINEL_TIMEOUT_S),
        "socket_keepalive": kwargs.get("socket_keepalive", False),
    }
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    options = dict(kwargs, db=target.db, username=target.username, password=target.password, is_master=True)
    pool = _SentinelPool(target.service, manager, owns_sentinels=True, **options)
    return redis_class.from_pool(pool)


def dedicated(redis: Redis, *, max_connections: int, **overrides: Any) -> Redis:
    """A client with a pool of its own to the same server as `redis` (a blocking reader that must
    not hold a connection of the shared pool), with some connection options changed."""
    pool = redis.connection_pool
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    kwargs.update(overrides)
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)  # the Sentinel pool's back-reference to itself
        own: ConnectionPool = _SentinelPool(
            pool.service_name,
            pool.sentinel_manager,
            owns_sentinels=False,
            connection_class=pool.connection_class,
            max_connections=max_connections,
            is_master=pool.is_master,
            **kwargs,
        )
    else:
        own = ConnectionPool(
            connection_class=pool.connection_class, max_connections=max_connections, **kwargs
        )
    return Redis.from_pool(own)


async def master_address(redis: Redis) -> tuple[str, int] | None:
    """Where the Sentinels say the master is now, for a client `connect` made from a sentinel URL
    (None for a plain one). Raises redis-py's MasterNotFoundError when none of them knows."""
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    host, port = await pool.sentinel_manager.discover_master(pool.service_name)
    return str(host), int(port)


async def replicas(redis: Redis) -> list[tuple[str, int]]:
    """The replicas the Sentinels see up, for a client of a sentinel URL ([] for a plain one)."""
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return []
    found = await pool.sentinel_manager.discover_slaves(pool.service_name)
    return [(str(h), int(p)) for h, p in found]
