"""Server-Sent Events read from a byte stream, as the WHATWG spec parses them.

Bytes arrive in arbitrary pieces: a line, a field or a UTF-8 sequence may be split between
two of them. Lines end in `\\n`, `\\r\\n` or `\\r`; an event is its `data:` lines joined with
`\\n` and ends at a blank line; `:` lines are comments (keep-alives); `event:` names it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_EVENT_BYTES = 4_000_000  # a provider that never ends an event is not buffered forever


@dataclass(slots=True)
class Event:
    data: str
    event: str = "message"


class SSEError(ValueError):
    pass


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._pending_cr = False  # the last piece ended in `\r`: a `\n` starting the next is its pair

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that `chunk` completes."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buffer + chunk
        events: list[Event] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt] == 0x0A:
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            event = self._line(buf[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buf[start:]
        if len(self._buffer) + sum(len(d) for d in self._data) > MAX_EVENT_BYTES:
            raise SSEError(f"an event longer than {MAX_EVENT_BYTES} bytes")
        return events

    def _line(self, raw: bytes) -> Event | None:
        if not raw:  # a blank line dispatches the event
            if not self._data:
                self._event = ""
                return None
            event = Event("\n".join(self._data), self._event or "message")
            self._data, self._event = [], ""
            return event
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # `id`, `retry` and unknown fields mean nothing to a chat stream

    def close(self) -> list[Event]:
        """At the end of the body: a last event not followed by a blank line still counts."""
        events = self.feed(b"\n\n") if (self._buffer or self._data) else []
        return events
