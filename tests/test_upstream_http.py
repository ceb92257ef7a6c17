"""The provider HTTP client (`workers.http.Upstream` on `workers.netstream`'s sockets) against a
real HTTP/1.1 server on loopback, over plain TCP and TLS (a test CA from trustme), on asyncio's
own event loop and on uvloop's (what the worker processes run on), with each HTTP/1.1
connection (`SWITCHYARD_PROVIDER_CLIENT`: httpcore's h11 one, and `workers.h1`'s httptools one).

The server is a small asyncio one so that each test can misbehave on purpose: answer late, cut a
body short, close a kept-alive connection behind the client's back, send megabytes, stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import trustme

from switchyard.settings import Settings
from workers.http import POOL_SHARDS, Upstream, UpstreamConnectionError, UpstreamTimeout

LOOPS = ["asyncio", "uvloop"]
BIG = 3 * 1024 * 1024  # more than the stream's read-ahead limit (256 KiB): reading pauses and resumes


@dataclass
class Server:
    """A loopback HTTP/1.1 server; what it does depends on the request path."""

    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                fields = (x.partition(": ") for x in lines[1:])
                length = next((int(v) for k, _, v in fields if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                self.requests.append(path)
                if not await self._answer(path, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False to close the connection afterwards."""
        if path == "/slow":
            await asyncio.sleep(3)
        if path == "/cut":  # promises 100 bytes, sends 10, hangs up
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            await writer.drain()
            return False
        if path == "/garbage":  # not an HTTP status line
            writer.write(b"SMTP/9 hello there\r\n\r\n")
            await writer.drain()
            return False
        if path == "/stall":  # the head and half the body, then nothing
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n0123456789")
            await writer.drain()
            await asyncio.sleep(3)
            return False
        if path == "/huge-head":  # a head that never ends
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(64):
                writer.write(b"x-pad: %s\r\n" % (b"a" * 4096))
            await writer.drain()
            await asyncio.sleep(60)  # a client that waits for the rest outlasts the test's 30 s
            return False
        if path == "/until-close":  # no length, no chunks: the body ends with the connection
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
            await writer.drain()
            writer.write(b"it")
            await writer.drain()
            return False
        if path == "/chunked":  # a plain answer in chunks, then the connection is reused
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for piece in (b'{"a":', b' "chunked"}'):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/stream":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for i in range(3):
                event = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        payload = b"x" * BIG if path == "/big" else orjson.dumps({"path": path, "echo": body.decode()})
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
        )
        writer.write(payload)
        await writer.drain()
        # /bye answers as if the connection stayed open, then closes it: the client's pooled
        # connection is dead, and only a look at the socket can tell
        return path != "/bye"


def run(loop: str, main: Callable[[], Awaitable[None]]) -> None:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), 30))


@pytest.fixture(autouse=True, params=["httpcore", "httptools"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with each provider connection."""
    monkeypatch.setenv("SWITCHYARD_PROVIDER_CLIENT", str(request.param))
    return str(request.param)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def contexts(ca: trustme.CA) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    yield server, client


def settings(timeout_s: float = 5.0) -> Settings:
    return Settings(_env_file=None, SWITCHYARD_PROVIDER_TIMEOUT_S=str(timeout_s))  # type: ignore[call-arg]


HEADERS = [(b"content-type", b"application/json")]


@contextlib.asynccontextmanager
async def serving(
    tls: ssl.SSLContext | None = None, trust: ssl.SSLContext | None = None, timeout_s: float = 5.0
) -> AsyncIterator[tuple[Server, Upstream]]:
    """A started server and a client for it; both closed afterwards."""
    server = await Server(tls=tls).start()
    up = Upstream(settings(timeout_s), ssl_context=trust)
    try:
        yield server, up
    finally:
        await up.aclose()
        await server.stop()


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_calls_are_answered_and_connections_kept_alive(
    loop: str, tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def main() -> None:
        async with serving(tls=contexts[0] if tls else None, trust=contexts[1]) as (server, up):
            for i in range(2 * POOL_SHARDS):
                r = await up.post(server.url("/v1/chat"), b'{"n": %d}' % i, HEADERS, 5.0)
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/json"
                assert orjson.loads(r.content) == {"path": "/v1/chat", "echo": f'{{"n": {i}}}'}
            # 64 at once, then again: the pools' connections are reused, not opened per call
            results = await asyncio.gather(
                *(up.post(server.url("/v1/chat"), b"{}", HEADERS, 5.0) for _ in range(64))
            )
            assert [r.status_code for r in results] == [200] * 64
            opened = server.connections
            await asyncio.gather(*(up.post(server.url("/v1/chat"), b"{}", HEADERS, 5.0) for _ in range(64)))
            assert server.connections == opened
            assert len(server.requests) == 2 * POOL_SHARDS + 128

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(loop: str) -> None:
    async def main() -> None:
        async with serving() as (server, up):
            for _ in range(3 * POOL_SHARDS):  # every pool gets a connection the server then closes
                r = await up.post(server.url("/bye"), b"{}", HEADERS, 5.0)
                assert r.status_code == 200
                await asyncio.sleep(0.005)
            assert server.connections == 3 * POOL_SHARDS

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_large_body_is_read_whole(loop: str) -> None:
    async def main() -> None:
        async with serving() as (server, up):
            for _ in range(2):
                r = await up.post(server.url("/big"), b"{}", HEADERS, 5.0)
                assert r.status_code == 200 and len(r.content) == BIG and set(r.content) == {ord("x")}

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_stream_arrives_event_by_event(
    loop: str, tls: bool, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def main() -> None:
        async with serving(tls=contexts[0] if tls else None, trust=contexts[1]) as (server, up):
            async with up.stream_post(server.url("/stream"), b"{}", HEADERS, 5.0) as s:
                assert s.status_code == 200 and s.headers["content-type"] == "text/event-stream"
                chunks = [c async for c in s.chunks()]
            assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert len(chunks) == 3  # as they were sent, not gathered at the end

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_faults_become_the_upstream_errors(
    loop: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def main() -> None:
        server = await Server().start()
        up = Upstream(settings(timeout_s=0.3))
        strict = Upstream(settings(), ssl_context=ssl.create_default_context())  # does not trust the test CA
        tls_server = await Server(tls=contexts[0]).start()
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout):
                await up.post(server.url("/slow"), b"{}", HEADERS, 0.3)
            assert asyncio.get_running_loop().time() - started < 2
            with pytest.raises(UpstreamConnectionError):
                await up.post(server.url("/cut"), b"{}", HEADERS, 5.0)
            await server.stop()
            with pytest.raises(UpstreamConnectionError):  # nothing listens there any more
                await up.post(f"http://127.0.0.1:{server.port}/v1/chat", b"{}", HEADERS, 5.0)
            with pytest.raises(UpstreamConnectionError):  # a certificate we do not trust
                await strict.post(tls_server.url("/v1/chat"), b"{}", HEADERS, 5.0)
            # and the client still works after all that
            again = await Server().start()
            try:
                assert (await up.post(again.url("/ok"), b"{}", HEADERS, 5.0)).status_code == 200
            finally:
                await again.stop()
        finally:
            await up.aclose()
            await strict.aclose()
            await tls_server.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_bodies_by_length_by_chunks_and_by_close(loop: str) -> None:
    async def main() -> None:
        async with serving() as (server, up):
            r = await up.post(server.url("/chunked"), b"{}", HEADERS, 5.0)
            assert r.status_code == 200 and orjson.loads(r.content) == {"a": "chunked"}
            r = await up.post(server.url("/v1/chat"), b"{}", HEADERS, 5.0)  # by length
            assert orjson.loads(r.content) == {"path": "/v1/chat", "echo": "{}"}
            r = await up.post(server.url("/until-close"), b"{}", HEADERS, 5.0)
            assert r.status_code == 200 and r.content == b"all of it"
            for _ in range(POOL_SHARDS):  # every pool: its connection is still good
                r = await up.post(server.url("/chunked"), b"{}", HEADERS, 5.0)
                assert orjson.loads(r.content) == {"a": "chunked"}

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_malformed_answer_or_a_stalled_body_is_a_clean_upstream_error(loop: str) -> None:
    async def main() -> None:
        async with serving(timeout_s=0.3) as (server, up):
            with pytest.raises(UpstreamConnectionError):
                await up.post(server.url("/garbage"), b"{}", HEADERS, 5.0)
            with pytest.raises(UpstreamConnectionError):  # refused past 16 KiB, not read forever
                await up.post(server.url("/huge-head"), b"{}", HEADERS, 5.0)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamTimeout):  # the head came; the rest of the body does not
                await up.post(server.url("/stall"), b"{}", HEADERS, 0.3)
            assert asyncio.get_running_loop().time() - started < 2.5
            async with up.stream_post(server.url("/stall"), b"{}", HEADERS, 0.3) as s:
                assert s.status_code == 200
                with pytest.raises(UpstreamTimeout):
                    async for _ in s.chunks():
                        pass
            # and the client still works after all that
            assert (await up.post(server.url("/ok"), b"{}", HEADERS, 5.0)).status_code == 200

    run(loop, main)
