"""Property-based tests (hypothesis): arbitrary JSON thrown at every route of the app's route
table, with a valid key and providers that are up, never gets a 5xx; an error comes in the
shape of the route's dialect; and no synchronous waiter is left behind afterwards.

The bodies hold what broke the edge before (issue 12): nesting past the depth bound, integers
beyond 64 bits, floats at the edge of double, numbers and NaN as strings, NUL and lone
surrogates in strings, wrong types, and plausible requests with one field replaced by any of
those. Path parameters get plausible and odd values. Examples are derandomized and bounded so
that the run stays well under a minute and a half.

Hypothesis drives a synchronous test, so the app, its worker and the stand-in providers run in
an event loop on a thread of their own (`LoopThread`) and each request is handed to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute

from api.state import Services
from switchyard.errors import InvalidRequest, SwitchyardError
from switchyard.standin import StandIn
from switchyard.standin_images import ImageStandIn
from tests.conftest import ADMIN_KEY, Gateway, base_env, make_settings, running_gateway

T = TypeVar("T")

HUGE_INTS = [2**63 - 1, 2**63, -(2**63) - 1, 2**64, 2**64 - 1, 10**30, -(10**400)]
ODD_STRINGS = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff", "NaN", "Infinity", "-Infinity", "1e308",
               "1e999", "18446744073709551616", "-1", "0", "../../etc/passwd", "%00", "é" * 300,
               "mock/echo", "[hang]"[1:], "a" * 5000, "\u202e", "\ufeff"]  # fmt: skip
PATH_VALUES = ["mock/echo", "mock%2Fecho", "1", "0", "-1", "18446744073709551616", "%00", "a%00b",
               "%ED%A0%80", "%FF", "..", "x" * 600, "%E2%80%AE", "00000000000000000000000000000000",
               "model/with/slashes", "%20", "null"]  # fmt: skip
# a plausible request of every kind at once (the routes ignore or refuse what is not theirs)
TEMPLATE: dict[str, Any] = {
    "model": "mock/echo",
    "messages": [{"role": "user", "content": "hi"}],
    "prompt": "a cat",
    "input": "hello",
    "name": "fuzz-model",
    "base_model": "mock/echo",
    "personality_summary": "You are a patient and kind assistant for everyone.",
    "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "query": "cats",
    "amount": 5,
}


def jsons(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from(HUGE_INTS)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([1e308, -1e308, 5e-324, 1.7976931348623157e308])
        | st.text(max_size=20)
        | st.sampled_from(ODD_STRINGS)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


DEEP = "\u0000deep\u0000"  # where a nested value goes in a body, replaced once encoded


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """A value nested `depth` levels (arrays, objects or both by turns), written out as JSON
    directly: encoders recurse, and this must go past their limits."""
    depth = draw(st.sampled_from([62, 63, 64, 65, 66, 250, 260, 1000, 3000]))
    leaf = draw(st.sampled_from([b"1", b'"x"', b"18446744073709551616", b"null", b"[]"]))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}"), (b'[{"k":', b"}]")]))
    return opening * depth + leaf + closing * depth


FIELDS = [*TEMPLATE, "seed", "max_tokens", "temperature", "n", "stream", "size", "quality", "limits",
          "credits", "logit_bias", "providers", "force", "dimensions", "tags", "stop", "unknown"]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "arbitrary", "deep", "raw", "none"]))
    if kind == "none":
        return None
    if kind == "raw":
        return draw(
            st.binary(max_size=40) | st.sampled_from([b"{", b"[]", b"{}", b"null", b'{"a":1}{', b"\xff"])
        )
    if kind == "arbitrary":
        value: Any = draw(jsons(20))
    else:
        value = dict(TEMPLATE)
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(FIELDS))
            value[name] = DEEP if kind == "deep" else draw(jsons())
        if draw(st.booleans()):
            value.pop(draw(st.sampled_from(list(TEMPLATE))), None)
    # json (not orjson) writes integers of any size and lone surrogates as \\u escapes
    encoded = json.dumps(value).encode()
    return encoded.replace(json.dumps(DEEP).encode(), draw(deep())) if kind == "deep" else encoded


def routes(app: Litestar) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path template, path parameter names) of every HTTP route."""
    out = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods - {"OPTIONS"}:
                out.add((method, route.path, tuple(route.path_parameters)))
    return sorted(out)


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        for kind in ("str", "path"):
            path = path.replace(f"{{{name}:{kind}}}", value)
    return path


class LoopThread:
    """An event loop on a thread of its own, for a synchronous test to hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Fuzzed:
    def __init__(self, loop: LoopThread, gw: Gateway, key: str, job_id: str, custom_id: str) -> None:
        self.loop, self.gw, self.key, self.job_id, self.custom_id = loop, gw, key, job_id, custom_id
        transport = gw.client._transport
        assert isinstance(transport, httpx.ASGITransport)
        self.app: Litestar = transport.app  # type: ignore[assignment]
        self.services: Services = self.app.state.services
        self.shapes = {
            (m, p): shape_of(self.app, m, p)
            for m, p, _ in routes(self.app)
            if m != "HEAD" and not is_page(self.app, m, p)
        }


NATIVE_SHAPE = frozenset({"success", "error", "message", "details"})


def is_page(app: Litestar, method: str, path: str) -> bool:
    """A dashboard page (api/pages): it answers errors with an HTML page, not a dialect's JSON."""
    return any(
        route.path == path
        and isinstance(route, HTTPRoute)
        and route.route_handler_map[method][0].opt.get("page")
        for route in app.routes
        if method in getattr(route, "route_handler_map", {})
    )


def shape_of(app: Litestar, method: str, path: str) -> frozenset[str]:
    """The top-level keys of the route's dialect's error shape: its own handler renders a 400."""
    for route in app.routes:
        if route.path != path or not isinstance(route, HTTPRoute):
            continue
        handler = route.route_handler_map[method][0]
        render = handler.resolve_exception_handlers()[SwitchyardError]
        sample = render(None, InvalidRequest.field("f", "m"))  # type: ignore[arg-type]
        return frozenset(orjson.loads(sample.content))
    raise AssertionError(f"no route {method} {path}")


@pytest.fixture
def fuzzed(tmp_path: Path, redis_url: str, db_url: str) -> Iterator[Fuzzed]:
    """The app with a worker, a chat and embeddings stand-in and an image stand-in, all up, in a
    loop of their own; a key with credits, one finished job and one custom model of its own."""
    loop = LoopThread()
    try:
        chat = loop.run(StandIn(models=["mock/echo", "mock/embed"]).start())
        pics = loop.run(ImageStandIn().start())
        providers = tmp_path / "providers.toml"
        providers.write_text(PROVIDERS.format(chat=chat.base_url, pics=pics.base_url))
        env = base_env(redis_url, db_url, providers, tmp_path / "data")
        env["SWITCHYARD_ALLOW_PRIVATE_URLS"] = "false"  # no fuzzed URL reaches a local server
        gateway = running_gateway(make_settings(env))
        gw = loop.run(gateway.__aenter__())
        try:
            loop.run(_start_worker(gw))
            key = loop.run(gw.create_key("fuzzer", credits=1_000_000))
            submitted = loop.run(
                gw.client.post("/v1/chat/completions?batch=1", json=TEMPLATE, headers=_auth(key))
            )
            assert submitted.status_code == 202, submitted.text
            persona = {k: TEMPLATE[k] for k in ("name", "base_model", "personality_summary")}
            made = loop.run(gw.client.post("/api/v1/custom", json=persona, headers=_auth(key)))
            assert made.status_code == 201, made.text
            job_id = submitted.json()["id"]  # an OpenAI-style job object on the OpenAI routes
            yield Fuzzed(loop, gw, key, job_id, str(made.json()["data"]["id"]))
        finally:
            loop.run(gateway.__aexit__(None, None, None))
            loop.run(chat.stop())
            loop.run(pics.stop())
    finally:
        loop.stop()


PROVIDERS = """
[[providers]]
name = "standin"
kind = "openai"
base_url = "{chat}"
models = ["mock/echo", "mock/embed"]
meta = {{ "mock/embed" = {{ type = "embedding" }} }}

[[providers]]
name = "pics"
kind = "pollinations-image"
base_url = "{pics}"
models = ["flux"]
"""


async def _start_worker(gw: Gateway) -> None:
    gw.start_worker()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-API-Key": key}


def request_strategy(f: Fuzzed) -> st.SearchStrategy[tuple[str, str, str, bytes | None, dict[str, str]]]:
    table = routes(f.app)
    own = {"job_id": f.job_id, "model_id": f.custom_id}

    @st.composite
    def one(draw: st.DrawFn) -> tuple[str, str, str, bytes | None, dict[str, str]]:
        method, template, names = draw(st.sampled_from(table))
        values = {}
        for name in names:
            plausible = own.get(name, "mock/echo")
            values[name] = draw(st.sampled_from([plausible, *PATH_VALUES]))
        query = draw(
            st.sampled_from(
                [
                    "",
                    "?batch=1",
                    "?page=18446744073709551616",
                    "?limit=-1",
                    "?limit=99999999999999999999",
                    "?days=0",
                    "?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ojox",
                    "?q=%00",
                    "?status=%ED%A0%80",
                    "?batch=2",
                    "?page=%C2%B2",
                    "?offset=1e9",
                    "?sort=name&order=up",
                ]
            )  # fmt: skip
        )
        body = draw(bodies()) if method in ("POST", "PUT", "PATCH", "DELETE") else None
        headers = {**_auth(f.key), "Prefer": "wait=0.5", "content-type": "application/json"}
        if template.startswith(("/api/keys", "/api/admin", "/api/cache")) and draw(st.booleans()):
            headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Prefer": "wait=0.5"}
        return method, template, fill(template, values) + query, body, headers

    return one()


def check(
    f: Fuzzed, method: str, template: str, url: str, body: bytes | None, headers: dict[str, str]
) -> None:
    response = f.loop.run(f.gw.client.request(method, url, content=body, headers=headers))
    # 501: a route whose provider kind the providers file does not configure (NotSupported)
    assert response.status_code < 500 or response.status_code == 501, (
        f"{method} {url} {body!r:.300} -> {response.status_code} {response.text:.500}"
    )
    # Litestar's own OpenAPI pages (/schema/...) answer in HTML: no dialect of ours
    page = (method, template) not in f.shapes and method != "HEAD"
    if response.status_code >= 400 and page and response.headers["content-type"].startswith("text/html"):
        pass  # a dashboard page's own error page
    elif response.status_code >= 400 and method != "HEAD" and not template.startswith("/schema"):
        assert response.headers["content-type"].startswith("application/json"), response.text[:300]
        got = orjson.loads(response.content)
        shapes = [] if page else [f.shapes[(method, template)]]
        if response.status_code in (404, 405) or page:  # a URL no route matched: the app's own (native) shape
            shapes.append(NATIVE_SHAPE)
        assert isinstance(got, dict) and any(shape <= set(got) for shape in shapes), (
            f"{method} {url}: {got} is not in the shape {set(shapes[0])}"
        )


# The app's loop (another thread) may use `random` while hypothesis draws an example; hypothesis
# takes that for a strategy using `random` and warns. The strategies here do not.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.timeout(120)
def test_arbitrary_input_at_every_route_never_gets_a_5xx(fuzzed: Fuzzed) -> None:
    @settings(
        max_examples=700,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request_strategy(fuzzed))
    def run(req: tuple[str, str, str, bytes | None, dict[str, str]]) -> None:
        check(fuzzed, *req)

    run()
    assert fuzzed.services.jobs.waiting == 0
    assert fuzzed.services.streams.subscribed == 0


@pytest.mark.timeout(120)
def test_every_route_with_every_odd_path_value(fuzzed: Fuzzed) -> None:
    """Not left to chance: each route once with each odd path value and a deep, huge body."""
    body = json.dumps({**TEMPLATE, "seed": 2**64, "x": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}).encode()
    for method, template, names in routes(fuzzed.app):
        for value in PATH_VALUES if names else [""]:
            url = fill(template, dict.fromkeys(names, value))
            check(fuzzed, method, template, quote(url, safe="/%?=&"), body if method != "GET" else None,
                  {**_auth(fuzzed.key), "Prefer": "wait=0.5"})  # fmt: skip
    assert fuzzed.services.jobs.waiting == 0
    assert fuzzed.services.streams.subscribed == 0
