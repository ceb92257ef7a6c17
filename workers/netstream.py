"""An asyncio network backend for httpcore: the provider calls' sockets without anyio.

httpcore reaches sockets through a network backend; its default on asyncio is anyio's, which
wraps every read and write in a cancel scope and answers httpcore's "is this idle connection
readable?" (asked of every pooled connection each time a request is placed) through typed
attributes and a `select` call. On a worker that makes one provider call per job, that was a
fifth of its CPU. This backend is asyncio's own transport and a small protocol: reads come from
the bytes the event loop has already received, a timeout is one timer, and readability is a
look at that buffer. TLS is asyncio's `start_tls`. The contract is httpcore's
(`AsyncNetworkBackend`, `AsyncNetworkStream`), exceptions included.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Coroutine, Iterable
from typing import Any

import httpcore

# httpcore's own type for socket options: (level, option, value) or (level, option, None, len)
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

_HIGH_WATER = 256 * 1024  # stop reading the socket while this much is unread


class _Protocol(asyncio.Protocol):
    """Collects what arrives; wakes a reader waiting for it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.write_paused: asyncio.Future[None] | None = None
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are asyncio.Transport in behaviour, not by inheritance
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)

    def pause_writing(self) -> None:
        if self.write_paused is None or self.write_paused.done():
            self.write_paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


def _time_out(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._protocol
        if not p.buffer and not p.eof:
            loop = asyncio.get_running_loop()
            p.waiter = loop.create_future()
            timer = loop.call_later(timeout, _time_out, p.waiter) if timeout is not None else None
            try:
                await p.waiter
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading from the provider") from None
            finally:
                p.waiter = None
                if timer is not None:
                    timer.cancel()
        if p.buffer:
            data = bytes(p.buffer[:max_bytes])
            del p.buffer[:max_bytes]
            if p.reading_paused and len(p.buffer) <= _HIGH_WATER // 4:
                p.reading_paused = False
                self._transport.resume_reading()
            return data
        if p.error is not None:
            raise httpcore.ReadError(f"{p.error.__class__.__name__}: {p.error}")
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._protocol
        if self._transport.is_closing():
            raise httpcore.WriteError(f"the connection is closed ({p.error or 'by the peer'})")
        self._transport.write(buffer)
        paused = p.write_paused
        if paused is not None and not paused.done():  # the kernel's buffer is full: wait for it
            try:
                async with asyncio.timeout(timeout):
                    await paused
            except TimeoutError:
                raise httpcore.WriteTimeout("timed out writing to the provider") from None

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport,
                self._protocol,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(f"{exc.__class__.__name__}: {exc}") from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        return AsyncioStream(transport, self._protocol)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection with something to read: closed or broken
            p = self._protocol
            return bool(p.buffer) or p.eof or self._transport.is_closing()
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        connect = asyncio.get_running_loop().create_connection(_Protocol, host, port, local_addr=local)
        return await _connected(connect, f"{host}:{port}", timeout, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        connect = asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        return await _connected(connect, path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connected(
    connect: Coroutine[Any, Any, tuple[asyncio.Transport, _Protocol]],
    where: str,
    timeout: float | None,
    options: Iterable[SocketOption] | None,
) -> AsyncioStream:
    """A connection made within `timeout`, with httpcore's exceptions for the ways it fails."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connect
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"timed out connecting to {where}") from exc
    except OSError as exc:
        raise httpcore.ConnectError(f"{exc.__class__.__name__}: {exc}") from exc
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is not None:
        for option in options or ():
            sock.setsockopt(*option)  # type: ignore[arg-type]
    return AsyncioStream(transport, protocol)
