"""An HTTP/1.1 connection for httpcore's pool that parses responses with httptools.

httpcore's own HTTP/1.1 connection parses with h11, in pure Python; in a worker's profile h11
was about an eighth of the samples. This connection implements httpcore's connection
interface (`AsyncConnectionInterface`) with httptools, the C parser (llhttp) that uvicorn
already installs, on the same network backend (`workers.netstream`): httpcore's pool still does
the pooling, the keep-alive expiry, the readability check of idle connections and the
request's timeouts; this class only writes a request and parses its answer. Requests are
written whole (head and body in one write: a provider call's body is bytes in memory).

Failures are httpcore's exceptions, as its own connection raises them: a server that closes
before answering is `RemoteProtocolError`, an answer that does not parse is
`RemoteProtocolError`, a read that outlasts the timeout is `ReadTimeout`.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import AsyncIterator

import httpcore
import httptools

READ_SIZE = 65536
MAX_HEAD = 16384  # the most of a response's head (status line and headers) read, as h11's default


class _State(enum.IntEnum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class _Parse:
    """httptools' callbacks: the status, headers and body pieces of one response."""

    __slots__ = ("headers", "body", "headers_done", "complete", "closed", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.closed = False  # the body ended with the connection
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # (llhttp forgets it at the message's end)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class HttptoolsConnection(httpcore.AsyncConnectionInterface):
    def __init__(
        self,
        origin: httpcore.Origin,
        ssl_context: ssl.SSLContext | None,
        keepalive_expiry: float | None,
        network_backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        self._origin = origin
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._stream: httpcore.AsyncNetworkStream | None = None
        self._state = _State.NEW
        self._expire_at: float | None = None
        self._requests = 0

    async def _connect(self, timeout: float | None) -> httpcore.AsyncNetworkStream:
        host = self._origin.host.decode("ascii")
        stream = await self._backend.connect_tcp(host, self._origin.port, timeout)
        if self._origin.scheme == b"https":
            context = self._ssl_context if self._ssl_context is not None else httpcore.default_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            stream = await stream.start_tls(context, host, timeout)
        return stream

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"the request to {request.url.origin} is not for {self._origin}")
        if self._state not in (_State.NEW, _State.IDLE):
            raise httpcore.ConnectionNotAvailable()
        timeouts = request.extensions.get("timeout", {})
        self._state = _State.ACTIVE
        self._expire_at = None
        self._requests += 1
        try:
            if self._stream is None:
                self._stream = await self._connect(timeouts.get("connect"))
            stream = self._stream
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
            head = [request.method, b" ", request.url.target, b" HTTP/1.1\r\n"]
            for name, value in request.headers:
                head += (name, b": ", value, b"\r\n")
            head.append(b"\r\n")
            await stream.write(b"".join(head) + body, timeouts.get("write"))
            parse = _Parse()
            parser = parse.parser
            read_timeout = timeouts.get("read")
            received = 0
            while not parse.headers_done:
                if received > MAX_HEAD:
                    raise httpcore.RemoteProtocolError(f"the response's head is over {MAX_HEAD} bytes")
                data = await stream.read(READ_SIZE, read_timeout)
                if not data:
                    raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")
                received += len(data)
                _feed(parser, data)
            status = parser.get_status_code()
        except BaseException:
            await self.aclose()
            raise
        return httpcore.Response(
            status,
            headers=parse.headers,
            content=_Body(self, stream, parser, parse, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "network_stream": stream},
        )

    async def _response_closed(self, keep_alive: bool) -> None:
        if keep_alive and self._state == _State.ACTIVE:
            self._state = _State.IDLE
            if self._keepalive_expiry is not None:
                self._expire_at = time.monotonic() + self._keepalive_expiry
        else:
            await self.aclose()

    async def aclose(self) -> None:
        self._state = _State.CLOSED
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self._origin

    def is_available(self) -> bool:
        return self._state == _State.IDLE

    def has_expired(self) -> bool:
        if self._expire_at is not None and time.monotonic() > self._expire_at:
            return True
        # an idle connection with something to read: the server closed it (or broke the protocol)
        return (
            self._state == _State.IDLE
            and self._stream is not None
            and bool(self._stream.get_extra_info("is_readable"))
        )

    def is_idle(self) -> bool:
        return self._state == _State.IDLE

    def is_closed(self) -> bool:
        return self._state == _State.CLOSED

    def info(self) -> str:
        return f"{str(self._origin)!r}, HTTP/1.1 (httptools), {self._state.name}, requests: {self._requests}"


def _feed(parser: httptools.HttpResponseParser, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        raise httpcore.RemoteProtocolError("the server switched protocols") from None
    except httptools.HttpParserError as exc:
        raise httpcore.RemoteProtocolError(f"malformed response: {exc}") from None


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body's end is marked (a length or chunks) rather than the connection's close."""
    return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)


class _Body:
    """The response body as it arrives; closing it before its end closes the connection."""

    __slots__ = ("_connection", "_stream", "_parser", "_parse", "_timeout", "_closed")

    def __init__(
        self,
        connection: HttptoolsConnection,
        stream: httpcore.AsyncNetworkStream,
        parser: httptools.HttpResponseParser,
        parse: _Parse,
        timeout: float | None,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._parser = parser
        self._parse = parse
        self._timeout = timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parse = self._parse
        try:
            while True:
                if parse.body:
                    pieces, parse.body = parse.body, []
                    for piece in pieces:
                        yield piece
                if parse.complete:
                    break
                data = await self._stream.read(READ_SIZE, self._timeout)
                if not data:
                    if _framed(parse.headers):
                        raise httpcore.RemoteProtocolError(
                            "peer closed connection without sending complete message body"
                        )
                    parse.complete = True  # a body without a length ends when the connection does
                    parse.closed = True
                    continue
                _feed(self._parser, data)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        parse = self._parse
        keep_alive = parse.complete and not parse.closed and not parse.body and parse.keep_alive
        await self._connection._response_closed(keep_alive)


class HttptoolsPool(httpcore.AsyncConnectionPool):
    """httpcore's pool whose connections are `HttptoolsConnection`s (plain HTTP/1.1 and TLS).
    It reads the pool's own settings from its private attributes (httpcore is pinned below 2)."""

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        return HttptoolsConnection(origin, self._ssl_context, self._keepalive_expiry, self._network_backend)
