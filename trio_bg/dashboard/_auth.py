"""Who may see the dashboard: a bearer token, or a loopback client in local-only mode.

- A token is taken from ``Authorization: Bearer <token>`` and, for GET requests only, from the
  ``token`` query parameter (an ``EventSource`` cannot send headers, and a browser opening the
  page cannot either). It is compared with :func:`hmac.compare_digest`, in constant time.
- ``local_only``: the client address (``scope["client"]``) must be loopback (127.0.0.0/8, ::1)
  and the ``Host`` header a loopback name, so that a web page whose domain was re-bound to
  127.0.0.1 (DNS rebinding) is refused too.
- A POST (the cancel action) authorised by loopback alone must come from the dashboard's own
  origin: a cross-site page cannot make the browser of someone on the server's machine cancel a
  task. One authorised by the token needs nothing more: another site cannot know the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs

from ..asgi._types import Scope


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def given_token(scope: Scope) -> bytes | None:
    """The token the request carries, or None."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and credentials.strip():
            return credentials.strip()
    if scope.get("method") == "GET":
        raw: bytes = scope.get("query_string", b"")
        values = parse_qs(raw.decode("latin-1")).get("token")
        if values:
            return values[0].encode()
    return None


def token_matches(scope: Scope, token: bytes) -> bool:
    """Whether the request carries ``token`` (constant-time comparison)."""
    given = given_token(scope)
    return given is not None and hmac.compare_digest(given, token)


def is_loopback_address(host: object) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped 127.x; anything else (a name, None) is not."""
    if type(host) is not str:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def host_name(scope: Scope) -> str | None:
    """The host of the ``Host`` header, without its port."""
    value = header(scope, b"host")
    if value is None:
        return None
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[1 : text.find("]")] if "]" in text else None
    return text.rpartition(":")[0] if ":" in text else text


def is_local(scope: Scope) -> bool:
    """A loopback client that asked for a loopback host."""
    client = scope.get("client")
    if not client or not is_loopback_address(client[0]):
        return False
    host = host_name(scope)
    return host is not None and (host == "localhost" or is_loopback_address(host))


def same_origin(scope: Scope) -> bool:
    """False if the browser says the request comes from another site (``Sec-Fetch-Site``,
    ``Origin``); True if it comes from the dashboard's own origin, or from no browser at all."""
    site = header(scope, b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return False
    origin = header(scope, b"origin")
    if origin is None:
        return True
    host = header(scope, b"host")
    return host is not None and origin.split(b"://", 1)[-1] == host
