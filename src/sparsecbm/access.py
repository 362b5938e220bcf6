"""Who may talk to the explorer: the checks every request passes before it reaches the app.

A page on any web site can send requests to 127.0.0.1, so a local server is
attack surface. :class:`AccessControl` (ASGI middleware) refuses, with a JSON
error and before the app sees the request:

- a ``Host`` that is not this server's address (DNS rebinding: 403);
- a request that changes state (any method but GET/HEAD) whose
  ``Content-Type`` is not ``application/json`` (a cross-site form or a
  ``text/plain`` fetch needs no permission from the browser: 415), or whose
  ``Origin`` is not the served origin (cross-site request forgery: 403);
- a body over ``max_body`` bytes (413, read no further);
- when a token is set, any request that does not carry it (403; a page the
  browser asks for gets a short HTML page saying how to get in), as Jupyter
  does: the URL printed at start has ``?token=...``; the page then keeps it in
  a ``SameSite=Strict`` cookie named after the port (cookies are shared by
  every port of a host), and a script can send ``X-Sparsecbm-Token``.

Cookies are read leniently, one ``name=value`` pair at a time: another app on
the same host name can set cookies the standard library's parser rejects
whole (quotes, spaces, backslashes), and that must not lose the token.

A token is required whenever the server listens on more than loopback.
Every response also carries headers that forbid framing and sniffing.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs, quote

MAX_BODY = 64 * 1024  # bytes of one request body
COOKIE = "sparsecbm_token"
TOKEN_HEADER = "x-sparsecbm-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy",
     b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    host = host.strip("[]").lower()
    return host in LOOPBACK_NAMES or host.startswith("127.")


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")


def allowed_hosts(bind: str) -> frozenset[str] | None:
    """Host names a request may name for a server bound to ``bind``; None: any
    (a wildcard bind, which is served only with a token)."""
    if is_wildcard(bind):
        return None
    names = {bind.strip("[]").lower()}
    if is_loopback(bind):
        names.update(LOOPBACK_NAMES)
    return frozenset(names)


def cookie_values(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` in a ``Cookie`` header, read pair by pair so that a
    malformed cookie of another app (quotes, spaces, backslashes) costs only itself."""
    values = []
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            values.append(value.strip().strip('"'))
    return values


def cookie_name(scope: Scope) -> str:
    """The token cookie of the server that received ``scope``: one name per port, so that two
    explorers on one host (which share cookies) do not overwrite each other's token."""
    server = scope.get("server") or (None, None)
    return f"{COOKIE}_{server[1]}" if server[1] else COOKIE


def local_location(path: str) -> bytes:
    """A redirect target on this server for request path ``path``: never another site
    (``//evil.example`` and ``/\\evil.example`` are read by browsers as other hosts)."""
    path = "/" + path.lstrip("/\\")
    return quote(path, safe="/-._~").encode("latin-1")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """'example.org:8765' -> 'example.org'; '[::1]:8765' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessControl:
    """ASGI middleware applying the module's checks to every HTTP request."""

    def __init__(self, app, *, hosts: Iterable[str] | None, token: str | None = None,
                 max_body: int = MAX_BODY) -> None:
        self.app = app
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        refusal = self._refusal(scope, headers, query)
        if refusal is not None:
            if refusal[0] == 403 and _wants_page(scope, headers):
                await _page(send, *refusal)
            else:
                await _json(send, *refusal)
            return
        if self.token and query.get("token") and scope["method"] in SAFE_METHODS:
            # The printed URL: keep the token in a cookie and drop it from the address bar.
            cookie = f"{cookie_name(scope)}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", local_location(scope["path"])), (b"set-cookie", cookie),
                                    (b"content-length", b"0"), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] not in SAFE_METHODS:
            body = await self._read_body(headers, receive)
            if isinstance(body, tuple):
                await _json(send, *body)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, scope: Scope, headers: dict[str, str], query: dict[str, list[str]]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return 403, (f"Host {host!r} is not this server's address ({', '.join(sorted(self.hosts))}); "
                         "refused as a possible DNS-rebinding attack")
        if self.token and not self._has_token(scope, headers, query):
            return 403, ("this explorer needs its token: open the URL with ?token=... that 'sparsecbm serve' "
                         f"printed, or send the {TOKEN_HEADER} header")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
            return 403, f"Origin {origin!r} is not this server's page; cross-site requests are refused"
        if scope["method"] in SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-site requests are refused (Sec-Fetch-Site)"
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return 415, f"Content-Type must be application/json, got {media or 'none'!r}"
        return None

    def _has_token(self, scope: Scope, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        assert self.token is not None
        given = [headers.get(TOKEN_HEADER, "")]
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token "):
            given.append(auth[6:].strip())
        given += cookie_values(headers.get("cookie", ""), cookie_name(scope))
        if scope["method"] in SAFE_METHODS:
            given += query.get("token", [])
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | tuple[int, str]:
        too_big = (413, f"the request body is over {self.max_body} bytes")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return too_big if length.isdigit() else (400, f"Content-Length: not a number: {length!r}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, "the client went away before sending the whole body"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send: Send) -> Send:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []),
                                              *((k, v) for k, v in SECURITY_HEADERS if k not in present)]}
        await send(message)

    return wrapped


def _wants_page(scope: Scope, headers: dict[str, str]) -> bool:
    """A browser navigating to a page (not the page's script asking the API)."""
    return (scope["method"] in SAFE_METHODS and not scope["path"].startswith("/api/")
            and "text/html" in headers.get("accept", ""))


REFUSED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>sparsecbm explorer: refused</title>
</head><body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto; line-height: 1.5">
<h1 style="font-size: 1.3em">This sparsecbm explorer did not let you in</h1><p>{message}</p>
<p>If you started it, open the address that <code>sparsecbm serve</code> printed (the one ending in
<code>?token=...</code>) in this browser.</p></body></html>"""


async def _page(send: Send, status: int, message: str) -> None:
    body = REFUSED_PAGE.format(message=html.escape(message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
