"""Local stand-ins for what media and content jobs fetch, for tests, benchmarks and demos.

`MediaServer` serves files over HTTP/1.1 on loopback the way a CDN does (Content-Length,
Content-Type, byte ranges) and counts the requests per path:
- `GET /media/{name}`: the file, at full speed;
- `GET /slow/{name}?rate=BYTES_PER_S`: the file, trickled (for cancellation tests);
- `GET /redirect?to=URL`: a 302 to `to`;
- anything else: 404.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from collections import Counter
from urllib.parse import parse_qs, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class MediaServer:
    def __init__(self, files: dict[str, bytes] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files = dict(files or {})
        self.host = host
        self.port = port
        self.hits: Counter[str] = Counter()
        self.aborted = 0  # responses the client stopped reading before their end
        self._server: asyncio.base_events.Server | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> MediaServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):
                self._server.close_clients()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if not await self._respond(writer, method, target, headers):
                    break
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            writer.close()

    async def _respond(
        self, writer: asyncio.StreamWriter, method: str, target: str, headers: dict[str, str]
    ) -> bool:
        parts = urlsplit(target)
        self.hits[parts.path] += 1
        query = parse_qs(parts.query)
        if parts.path == "/redirect" and query.get("to"):
            self._head(writer, 302, 0, "text/plain", {"location": query["to"][0]})
            await writer.drain()
            return True
        kind, _, name = parts.path.lstrip("/").partition("/")
        data = self.files.get(name) if kind in ("media", "slow") else None
        if data is None:
            body = b"not found"
            self._head(writer, 404, len(body), "text/plain")
            writer.write(body if method != "HEAD" else b"")
            await writer.drain()
            return True
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        start, end, status = 0, len(data), 200
        extra = {"accept-ranges": "bytes"}
        m = _RANGE.fullmatch(headers.get("range", ""))
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
            else:
                start = max(0, len(data) - int(m.group(2)))
            status = 206
            extra["content-range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        self._head(writer, status, len(body), ctype, extra)
        if method == "HEAD":
            await writer.drain()
            return True
        if kind == "slow":
            rate = float((query.get("rate") or ["8192"])[0])
            step = max(256, int(rate / 20))
            for i in range(0, len(body), step):
                writer.write(body[i : i + step])
                try:
                    await writer.drain()
                except ConnectionError:
                    self.aborted += 1
                    return False
                if writer.is_closing():
                    self.aborted += 1
                    return False
                await asyncio.sleep(step / rate)
            return True
        writer.write(body)
        await writer.drain()
        return True

    @staticmethod
    def _head(
        writer: asyncio.StreamWriter,
        status: int,
        length: int,
        ctype: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", f"content-type: {ctype}", f"content-length: {length}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
