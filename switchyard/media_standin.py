"""Local stand-ins for what media and content jobs fetch, for tests, benchmarks and demos.

`ContentStandIn` (below) answers as LRCLIB and TMDB do.

`MediaServer` serves files over HTTP/1.1 on loopback the way a CDN does (Content-Length,
Content-Type, byte ranges) and counts the requests per path:
- `GET /media/{name}`: the file, at full speed;
- `GET /slow/{name}?rate=BYTES_PER_S`: the file, trickled (for cancellation tests);
- `GET /redirect?to=URL`: a 302 to `to`;
- anything else: 404.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from switchyard.standin import LoopbackServer

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class MediaServer(LoopbackServer):
    def __init__(self, files: dict[str, bytes] | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files = dict(files or {})
        self.host = host
        self.port = port
        self.hits: Counter[str] = Counter()
        self.aborted = 0  # responses the client stopped reading before their end
        self._server: asyncio.base_events.Server | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

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


class ContentStandIn(LoopbackServer):
    """An LRCLIB-compatible lyrics API (`GET /api/search?q=`, `/api/get/{id}`), an iTunes
    Search-compatible song search (`GET /itunes/search?term=`) and a
    TMDB-compatible movie database under `/3` (`/movie/popular`, `/search/movie?query=`,
    `/movie/{id}`), answering from small in-memory catalogs. Counts requests per path; with
    `api_key` set, TMDB requests must carry it (`?api_key=` or `Authorization: Bearer`)."""

    SONGS: list[dict[str, Any]] = [
        {
            "id": 101,
            "trackName": "Bohemian Rhapsody",
            "artistName": "Queen",
            "albumName": "A Night at the Opera",
            "duration": 354.0,
            "instrumental": False,
            "plainLyrics": "Is this the real life?\nIs this just fantasy?",
            "syncedLyrics": "[00:00.50] Is this the real life?\n[00:04.10] Is this just fantasy?",
        },
        {
            "id": 102,
            "trackName": "Believer",
            "artistName": "Imagine Dragons",
            "albumName": "Evolve",
            "duration": 204.0,
            "instrumental": False,
            "plainLyrics": None,
            "syncedLyrics": "[00:01.00] First things first\n[00:03.20] I'ma say all the words inside my head",
        },
        {
            "id": 103,
            "trackName": "Interlude",
            "artistName": "Queen",
            "albumName": None,
            "duration": 60.0,
            "instrumental": True,
            "plainLyrics": None,
            "syncedLyrics": None,
        },
    ]
    ITUNES: dict[int, dict[str, Any]] = {  # by song id: what the iTunes Search API says of it
        101: {
            "releaseDate": "1975-10-31T12:00:00Z",
            "artworkUrl100": "https://is1-ssl.mzstatic.com/image/thumb/Music/queen/100x100bb.jpg",
            "trackViewUrl": "https://music.apple.com/us/album/bohemian-rhapsody/1440650428?i=1440650711",
        },
    }
    MOVIES: list[dict[str, Any]] = [
        {
            "id": 27205,
            "title": "Inception",
            "original_title": "Inception",
            "overview": "A thief who steals secrets...",
            "release_date": "2010-07-15",
            "vote_average": 8.4,
            "vote_count": 35000,
            "popularity": 90.5,
            "poster_path": "/inception.jpg",
            "backdrop_path": "/inception-bg.jpg",
            "genre_ids": [28, 878],
            "original_language": "en",
            "runtime": 148,
            "tagline": "Your mind is the scene of the crime.",
            "genres": [{"id": 28, "name": "Action"}, {"id": 878, "name": "Science Fiction"}],
            "imdb_id": "tt1375666",
            "status": "Released",
        },
        {
            "id": 680,
            "title": "Pulp Fiction",
            "original_title": "Pulp Fiction",
            "overview": "Crime stories...",
            "release_date": "1994-09-10",
            "vote_average": 8.5,
            "vote_count": 27000,
            "popularity": 70.1,
            "poster_path": None,
            "backdrop_path": None,
            "genre_ids": [80],
            "original_language": "en",
            "runtime": 154,
            "tagline": None,
            "genres": [{"id": 80, "name": "Crime"}],
            "imdb_id": "tt0110912",
            "status": "Released",
        },
    ]

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.hits: Counter[str] = Counter()
        self.fail_status: int | None = None  # every request answers this status
        self._server: asyncio.base_events.Server | None = None

    @property
    def lrclib_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def itunes_url(self) -> str:
        return f"http://{self.host}:{self.port}/itunes"

    @property
    def tmdb_url(self) -> str:
        return f"http://{self.host}:{self.port}/3"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                status, body = self.handle(target, headers)
                payload = orjson.dumps(body)
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                    % (status, len(payload))
                    + payload
                )
                await writer.drain()
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            writer.close()

    def handle(self, target: str, headers: dict[str, str]) -> tuple[int, Any]:
        parts = urlsplit(target)
        self.hits[parts.path] += 1
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if self.fail_status is not None:
            return self.fail_status, {"message": "stand-in failure"}
        path = parts.path
        if path == "/api/search":
            words = (query.get("q") or query.get("track_name") or "").lower().split()
            found = [
                s for s in self.SONGS
                if words and all(w in f"{s['trackName']} {s['artistName']}".lower() for w in words)
            ]  # fmt: skip
            return 200, found
        if path == "/itunes/search":  # the iTunes Search API's song results
            words = (query.get("term") or "").lower().split()
            found = [
                {"trackName": s["trackName"], "artistName": s["artistName"], **self.ITUNES[s["id"]]}
                for s in self.SONGS
                if s["id"] in self.ITUNES
                and words and all(w in f"{s['trackName']} {s['artistName']}".lower() for w in words)
            ]  # fmt: skip
            return 200, {"resultCount": len(found), "results": found}
        m = re.fullmatch(r"/api/get/(\d+)", path)
        if m:
            song = next((s for s in self.SONGS if s["id"] == int(m.group(1))), None)
            return (200, song) if song else (404, {"code": 404, "name": "TrackNotFound"})
        if path.startswith("/3/"):
            if self.api_key is not None:
                given = query.get("api_key") or headers.get("authorization", "").removeprefix("Bearer ")
                if given != self.api_key:
                    return 401, {"status_code": 7, "status_message": "Invalid API key", "success": False}
            return self._tmdb(path[2:], query)
        return 404, {"message": "no such route"}

    def _tmdb(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        def page(results: list[dict[str, Any]]) -> dict[str, Any]:
            listed = [
                {k: v for k, v in m.items() if k not in ("runtime", "genres", "imdb_id", "tagline", "status")}
                for m in results
            ]
            return {
                "page": int(query.get("page") or 1),
                "results": listed,
                "total_pages": 1,
                "total_results": len(listed),
            }

        if path == "/movie/popular":
            return 200, page(sorted(self.MOVIES, key=lambda m: -m["popularity"]))
        if path == "/search/movie":
            words = (query.get("query") or "").lower()
            return 200, page([m for m in self.MOVIES if words and words in m["title"].lower()])
        m = re.fullmatch(r"/movie/(\d+)", path)
        if m:
            movie = next((mv for mv in self.MOVIES if mv["id"] == int(m.group(1))), None)
            if movie is None:
                return 404, {
                    "status_code": 34,
                    "status_message": "The resource you requested could not be found.",
                    "success": False,
                }
            return 200, movie
        return 404, {"status_code": 34, "status_message": "no such route", "success": False}


async def _main(files: dict[str, bytes], args: argparse.Namespace) -> None:
    server = await MediaServer(files, port=args.port).start()
    print(f"media stand-in on {server.url('/media/')} serving {', '.join(files)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve media files like a CDN, on loopback")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("files", nargs="+", help="files to serve under /media/{name} and /slow/{name}")
    ns = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_main({Path(p).name: Path(p).read_bytes() for p in ns.files}, ns))
