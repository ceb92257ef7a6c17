"""yt-dlp as a library: one `YoutubeDL` per job, run in a thread, every request it makes checked.

Everything here is synchronous and runs off the event loop (the handler hands it to a thread).
What a job needs beyond yt-dlp's defaults:
- URL safety: only our request handler (urllib) is given to yt-dlp, and it checks every URL
  before it is fetched and every redirect before it is followed (`switchyard.urls`), so a
  public link cannot lead yt-dlp to a private address. HLS is fetched natively (not by
  ffmpeg, which would fetch on its own).
- Limits: duration and size are checked on the metadata before anything is downloaded, on
  the bytes as they arrive (the progress hook), and on the file once it is complete (its
  duration read by ffmpeg when the site did not say).
- Cancellation: the progress and post-processing hooks raise when the job is canceled, which
  stops the transfer at its next block.
- Progress: the hooks keep a snapshot that the handler writes to the job, throttled.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import yt_dlp
from yt_dlp.networking._urllib import RedirectHandler, UrllibRH
from yt_dlp.networking.exceptions import HTTPError, RequestError
from yt_dlp.postprocessor import FFmpegExtractAudioPP, FFmpegVideoRemuxerPP, PostProcessor
from yt_dlp.utils import DownloadCancelled, DownloadError

from jobs.media import MP3
from switchyard.errors import InvalidRequest, NotFound, ProviderFailed, SwitchyardError
from switchyard.urls import check_url

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})")


class MediaNotFound(NotFound):
    error_type = "media_not_found"


class MediaTooLarge(InvalidRequest):
    error_type = "media_too_large"


class MediaTooLong(InvalidRequest):
    error_type = "media_too_long"


class Canceled(Exception):
    """The job was canceled while yt-dlp ran."""


class _Stop(DownloadCancelled):
    """Raised from a hook to stop yt-dlp at once; carries why (None: the job was canceled)."""

    def __init__(self, error: SwitchyardError | None) -> None:
        super().__init__(error.message if error else "canceled")
        self.error = error


@functools.cache
def ffmpeg_exe() -> str:
    """The ffmpeg binary the imageio-ffmpeg wheel ships: no system ffmpeg needed."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass
class Progress:
    """What the hooks saw last, read by the handler (another thread) to report on the job."""

    stage: str = "starting"
    downloaded_bytes: int = 0
    total_bytes: int | None = None
    percent: float = 0.0
    canceled: threading.Event = field(default_factory=threading.Event)
    on_change: Callable[[], None] | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "percent": round(self.percent, 1),
            "downloaded_bytes": self.downloaded_bytes,
            "total_bytes": self.total_bytes,
        }

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    max_duration_s: float


@dataclass(slots=True)
class Downloaded:
    path: Path
    info: dict[str, Any]
    duration: float | None
    size: int


class _Logger:
    """yt-dlp's messages go nowhere (a job's failure carries its reason); warnings are kept."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warnings.append(msg)

    def error(self, msg: str) -> None:
        pass


UrlCheck = Callable[[str], object]  # raises InvalidRequest when a URL may not be fetched


class _UrlGuard:
    """Checks each URL yt-dlp is about to fetch; remembers the first refusal for the job's error."""

    def __init__(self, allow_private: bool, check: UrlCheck | None = None) -> None:
        self.check: UrlCheck = check or functools.partial(check_url, allow_private=allow_private, field="url")
        self.refused: InvalidRequest | None = None

    def __call__(self, url: str, what: str = "url") -> None:
        try:
            self.check(url)
        except InvalidRequest as exc:
            if self.refused is None:
                reason = exc.details[0]["message"] if exc.details else exc.message
                self.refused = InvalidRequest.field("url", f"{what} {url!r} refused: {reason}", url)
            raise RequestError(f"refused to fetch {url}: {exc.message}") from None


def _guarded_handler(guard: _UrlGuard) -> type[UrllibRH]:
    class GuardedUrllibRH(UrllibRH):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._responses: list[Any] = []

        def _send(self, request: Any) -> Any:
            guard(request.url, "the URL")
            try:
                response = super()._send(request)
            except HTTPError as exc:  # an error status: its response travels in the exception
                self._responses.append(exc.response)
                raise
            self._responses.append(response)
            return response

        def close(self) -> None:
            # yt-dlp leaves some responses open (the generic extractor's of a direct media link,
            # whose headers are all it reads; error responses): close what the job opened.
            for response in self._responses:
                with contextlib.suppress(Exception):
                    response.close()
            self._responses.clear()
            super().close()

        def _create_instance(self, proxies: Any, cookiejar: Any, legacy_ssl_support: Any = None) -> Any:
            opener = super()._create_instance(proxies, cookiejar, legacy_ssl_support)
            for handler in opener.handlers:
                if isinstance(handler, RedirectHandler):
                    follow = handler.redirect_request

                    def checked(
                        req: Any,
                        fp: Any,
                        code: Any,
                        msg: Any,
                        headers: Any,
                        newurl: str,
                        follow: Any = follow,
                    ) -> Any:
                        try:
                            guard(newurl, "a redirect to")
                        except RequestError:
                            fp.close()  # the 3xx response is not followed: release its socket
                            raise
                        return follow(req, fp, code, msg, headers, newurl)

                    handler.redirect_request = checked  # type: ignore[method-assign]
            return opener

    return GuardedUrllibRH


class GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose only way out is the guarded urllib handler."""

    def __init__(self, params: dict[str, Any], guard: _UrlGuard) -> None:
        self._sy_guard = guard
        super().__init__(params)

    @functools.cached_property
    def _request_director(self) -> Any:
        return self.build_request_director([_guarded_handler(self._sy_guard)])


class _LimitsCheck(PostProcessor):  # type: ignore[misc]
    """First post-processor: the downloaded file's duration, when the site did not give one."""

    def __init__(self, downloader: Any, limits: Limits) -> None:
        super().__init__(downloader)
        self.limits = limits
        self.duration: float | None = None

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        if not info.get("duration"):
            self.duration = probe_duration(Path(info["filepath"]))
            if self.duration is not None:
                info["duration"] = self.duration
        try:
            _check_duration(info.get("duration"), self.limits)
        except MediaTooLong as exc:
            raise _Stop(exc) from None
        return [], info


def probe_duration(path: Path) -> float | None:
    """The media's duration as ffmpeg reads it from the container (no ffprobe in the wheel)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    m = _DURATION.search(proc.stderr)
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _check_duration(duration: Any, limits: Limits) -> None:
    if isinstance(duration, int | float) and duration > limits.max_duration_s:
        raise MediaTooLong.field(
            "url", f"the media lasts {duration:.0f}s, more than the limit of {limits.max_duration_s:.0f}s"
        )


def _check_size(size: Any, limits: Limits, how: str) -> None:
    if isinstance(size, int | float) and size > limits.max_bytes:
        raise MediaTooLarge.field(
            "url", f"the media is {how} {int(size)} bytes, more than the limit of {limits.max_bytes} bytes"
        )


def format_selector(fmt: str, quality: str) -> str:
    """Always finds something: the best at or under the ceiling (`?`: an unknown height passes),
    else the smallest there is. mp4 prefers mp4/m4a streams so the merge needs no re-encode."""
    if fmt == MP3:
        return "ba[ext=m4a]/ba/b[acodec!=none]/b"
    height = int(quality.rstrip("p"))
    h = f"[height<=?{height}]"
    return f"bv*{h}[ext=mp4]+ba[ext=m4a]/bv*{h}+ba/b{h}[ext=mp4]/b{h}/wv*+wa/w"


def base_options(
    workdir: Path, guard_logger: _Logger, progress: Progress, extractors: list[str]
) -> dict[str, Any]:
    def on_progress(d: dict[str, Any]) -> None:
        if progress.canceled.is_set():
            raise _Stop(None)
        if d.get("status") == "downloading":
            progress.stage = "downloading"
            progress.downloaded_bytes = int(d.get("downloaded_bytes") or 0)
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            progress.total_bytes = int(total) if total else None
            if progress.total_bytes:
                progress.percent = min(100.0, 100.0 * progress.downloaded_bytes / progress.total_bytes)
            progress.changed()
        elif d.get("status") == "finished":
            progress.percent = 100.0
            progress.stage = "downloaded"
            progress.changed()

    def on_postprocess(d: dict[str, Any]) -> None:
        if progress.canceled.is_set():
            raise _Stop(None)
        if d.get("status") == "started":
            progress.stage = "converting"
            progress.changed()

    return {
        "logger": guard_logger,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "allowed_extractors": extractors,
        "outtmpl": {"default": "%(id).60B.%(ext)s"},
        "paths": {"home": str(workdir), "temp": str(workdir)},
        "restrictfilenames": True,
        "windowsfilenames": True,
        "ffmpeg_location": ffmpeg_exe(),
        "socket_timeout": 20,
        "retries": 2,
        "fragment_retries": 2,
        "extractor_retries": 1,
        "hls_prefer_native": True,
        "cachedir": False,
        "overwrites": True,
        "updatetime": False,
        "progress_hooks": [on_progress],
        "postprocessor_hooks": [on_postprocess],
    }


def _failure(exc: Exception, guard: _UrlGuard) -> SwitchyardError:
    """A yt-dlp failure as the job's error: refused URLs and missing media are the caller's."""
    if guard.refused is not None:
        return guard.refused
    cause = exc
    while isinstance(cause, DownloadError) and cause.exc_info and isinstance(cause.exc_info[1], Exception):
        if isinstance(cause.exc_info[1], _Stop):
            return cause.exc_info[1].error or ProviderFailed("canceled")
        if cause.exc_info[1] is cause:
            break
        cause = cause.exc_info[1]
    message = _ANSI.sub("", str(exc)).removeprefix("ERROR: ").strip()
    status = _HTTP_ERROR.search(message)
    if status and status.group(1) in ("404", "410"):
        return MediaNotFound(f"the media URL answered HTTP {status.group(1)}: {message}")
    lowered = message.lower()
    if "audio codec" in lowered or "does not contain any stream" in lowered:  # ffprobe found no audio
        return no_audio()
    if "unsupported url" in lowered:
        return InvalidRequest.field("url", f"no media found at this URL ({message})")
    if any(s in lowered for s in ("video unavailable", "private video", "has been removed", "not available")):
        return MediaNotFound(f"the media is not available: {message}")
    return ProviderFailed(f"yt-dlp could not fetch the media: {message}")


def download(
    url: str,
    fmt: str,
    quality: str,
    *,
    workdir: Path,
    extractors: list[str],
    limits: Limits,
    allow_private: bool,
    progress: Progress,
    check: UrlCheck | None = None,
) -> Downloaded:
    """Fetch one video (`mp4`, merged and remuxed to mp4) or its audio (`mp3`) into `workdir`.

    Raises a domain error with the reason, or `Canceled`. The caller removes `workdir`.
    """
    guard = _UrlGuard(allow_private, check)
    logger = _Logger()
    opts = base_options(workdir, logger, progress, extractors)
    opts["format"] = format_selector(fmt, quality)
    if fmt != MP3:
        opts["merge_output_format"] = "mp4"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with GuardedYoutubeDL(opts, guard) as ydl:
            info = ydl.extract_info(url, download=False)
            if info is None:
                raise InvalidRequest.field("url", "no media found at this URL", url)
            if info.get("_type") in ("playlist", "multi_video"):
                raise InvalidRequest.field("url", "is a playlist; give the link of one video", url)
            _check_duration(info.get("duration"), limits)
            _check_size(_expected_size(info), limits, "announced as")
            if fmt == MP3 and _no_audio(info):
                raise no_audio()
            checked = _LimitsCheck(ydl, limits)
            ydl.add_post_processor(checked, when="post_process")
            if fmt == MP3:
                pp: PostProcessor = FFmpegExtractAudioPP(
                    ydl, preferredcodec="mp3", preferredquality=_audio_quality(quality)
                )
            else:
                pp = FFmpegVideoRemuxerPP(ydl, preferedformat="mp4")
            ydl.add_post_processor(pp, when="post_process")
            progress.stage = "downloading"
            progress.changed()
            sized = _SizeLimit(progress, limits)
            ydl.add_progress_hook(sized)
            result = ydl.process_ie_result(info, download=True)
    except _Stop as stop:
        if stop.error is None:
            raise Canceled() from None
        raise stop.error from None
    except (DownloadError, RequestError) as exc:
        if progress.canceled.is_set():
            raise Canceled() from None
        raise _failure(exc, guard) from None
    downloads = (result or {}).get("requested_downloads") or []
    path = Path(downloads[0]["filepath"]) if downloads and downloads[0].get("filepath") else None
    if path is None or not path.is_file():
        raise ProviderFailed(
            "yt-dlp finished without a file" + (f" ({logger.warnings[-1]})" if logger.warnings else "")
        )
    size = path.stat().st_size
    _check_size(size, limits, "")
    duration = result.get("duration") or checked.duration
    return Downloaded(path=path, info=result, duration=float(duration) if duration else None, size=size)


class _SizeLimit:
    """A progress hook: stop as soon as the bytes (or the announced total) pass the limit."""

    def __init__(self, progress: Progress, limits: Limits) -> None:
        self.progress = progress
        self.limits = limits

    def __call__(self, d: dict[str, Any]) -> None:
        if d.get("status") != "downloading":
            return
        total = d.get("total_bytes")
        try:
            _check_size(total, self.limits, "announced as")
            _check_size(d.get("downloaded_bytes"), self.limits, "already")
        except MediaTooLarge as exc:
            raise _Stop(exc) from None


# An mp3 of a video without sound is the source's fault, not the gateway's: a 400 that says so.
def no_audio() -> InvalidRequest:
    return InvalidRequest.field("url", "the media has no audio track: there is nothing to make an mp3 of")


def _no_audio(info: dict[str, Any]) -> bool:
    """The site says the chosen format(s) carry no audio (`acodec: none`); unknown is not none."""
    formats = info.get("requested_formats") or [info]
    return all(f.get("acodec") == "none" for f in formats)


def _expected_size(info: dict[str, Any]) -> int | None:
    formats = info.get("requested_formats") or [info]
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    return sum(int(s) for s in sizes if s) or None


def _audio_quality(quality: str) -> str:
    from jobs.media import AUDIO_QUALITIES

    return AUDIO_QUALITIES.get(quality, "192")


def extract_info(
    url: str, *, extractors: list[str], allow_private: bool, limit: int | None = None
) -> dict[str, Any]:
    """Metadata only (a search, a post's media): nothing is downloaded."""
    guard = _UrlGuard(allow_private)
    progress = Progress()
    opts = base_options(Path("."), _Logger(), progress, extractors)
    opts["skip_download"] = True
    if limit is not None:
        opts["playlistend"] = limit
        opts["extract_flat"] = "in_playlist"
    opts["noplaylist"] = False
    try:
        with GuardedYoutubeDL(opts, guard) as ydl:
            info = ydl.extract_info(url, download=False)
    except (DownloadError, RequestError) as exc:
        raise _failure(exc, guard) from None
    if info is None:
        raise InvalidRequest.field("url", "no media found at this URL", url)
    return dict(ydl.sanitize_info(info))
