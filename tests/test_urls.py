"""User-supplied URLs: only http(s) to public addresses, unless private ones are allowed."""

from __future__ import annotations

import pytest

from switchyard.errors import InvalidRequest
from switchyard.urls import check_url, check_url_async, is_public_address


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_public_and_non_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "https://localhost/a",
        "http://[::1]/",
    ],
)
def test_private_targets_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_url(url, allow_private=False, field="X-OpenAI-Base-URL")
    assert refused.value.param == "X-OpenAI-Base-URL"
    assert "non-public address" in refused.value.message


async def test_private_targets_pass_when_allowed() -> None:
    assert await check_url_async("http://127.0.0.1:1/v1", allow_private=True) == "http://127.0.0.1:1/v1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/file", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http:///nohost", "has no host"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://no-such-host.invalid/", "cannot be resolved"),
    ],
)
async def test_malformed_or_unresolvable_urls_are_400(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        await check_url_async(url, allow_private=False)
