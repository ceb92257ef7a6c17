"""User-supplied URLs (media links, upstream overrides): http(s) only, public addresses only.

A URL whose host resolves to a loopback, private, link-local, multicast or reserved address is
refused unless `SWITCHYARD_ALLOW_PRIVATE_URLS` is on: a gateway that fetches what its callers
name must not become their way into the network it runs in (cloud metadata at
169.254.169.254, admin ports on 127.0.0.1...). Every address a name resolves to is checked,
and callers that follow redirects check each hop with the same function.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from switchyard.errors import InvalidRequest

SCHEMES = ("http", "https")


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool, field: str = "url") -> str:
    """The URL when it may be fetched; otherwise a 400 naming `field` and the reason.

    Blocking (it resolves the host): call it from a thread, or use `check_url_async`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest.field(field, f"is not a valid URL: {exc}", url) from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidRequest.field(field, "must be an http:// or https:// URL", url)
    host = parts.hostname
    if not host:
        raise InvalidRequest.field(field, "has no host", url)
    if allow_private:
        return url
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest.field(field, f"host {host!r} cannot be resolved ({exc})", url) from None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not is_public_address(address):
            raise InvalidRequest.field(
                field, f"host {host!r} resolves to a non-public address ({address}): refused", url
            )
    return url


async def check_url_async(url: str, *, allow_private: bool, field: str = "url") -> str:
    if allow_private:  # nothing to resolve: keep it off the thread pool
        return check_url(url, allow_private=True, field=field)
    return await asyncio.to_thread(check_url, url, allow_private=allow_private, field=field)
