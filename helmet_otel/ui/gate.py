"""Who may talk to the viewer: the Host and Origin checks (no DNS rebinding, no other site's
page) and the access token, on every request.

The token is random per run and printed in the viewer's URL. It is accepted as ``?token=`` (the
printed URL: the page answers by setting it as an HttpOnly, SameSite=Strict cookie named for
the port and sending the browser on without it in the address), as that cookie, or as an
``Authorization: Bearer`` header. It is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from helmet_otel.transports.http_guard import Guard
from helmet_otel.transports.http_server import Request

__all__ = ["Gate", "new_token"]

# Sec-Fetch-Site values a browser sends for our own page's requests and for a typed URL
_SAME_SITE = frozenset({"same-origin", "none"})


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Gate:
    listen_host: str
    port: int
    token: str | None  # None: --no-token (loopback only)
    guard: Guard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = Guard(self.listen_host)

    @property
    def cookie_name(self) -> str:
        return f"helmet_ui_{self.port}"

    def refusal(self, request: Request) -> tuple[int, str] | None:
        """None when the request may pass; else its status and why (for the client)."""
        host = request.header("host")
        if not self.guard.host_ok(host):
            return 403, "Host not allowed"
        origin = request.header("origin")
        if origin is not None and origin.strip().lower().rstrip("/") != f"http://{host}".lower():
            return 403, "Origin not allowed"
        site = request.header("sec-fetch-site")
        if site is not None and site.lower() not in _SAME_SITE:
            return 403, "cross-site requests are not allowed"
        if self.token is not None and not self._token_ok(request):
            return 401, "this viewer needs its access token: open the URL `helmet-otel ui` printed"
        return None

    def url_token(self, request: Request) -> str | None:
        values = parse_qs(request.query).get("token")
        return values[-1] if values else None

    def _token_ok(self, request: Request) -> bool:
        assert self.token is not None
        expected = self.token.encode()
        presented: list[str] = []
        authorization = request.header("authorization")
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                presented.append(value.strip())
        cookie_header = request.header("cookie")
        if cookie_header is not None:
            jar = SimpleCookie()
            try:
                jar.load(cookie_header)
            except CookieError:
                pass
            morsel = jar.get(self.cookie_name)
            if morsel is not None:
                presented.append(morsel.value)
        from_url = self.url_token(request)
        if from_url is not None:
            presented.append(from_url)
        ok = False
        for value in presented:
            ok |= hmac.compare_digest(value.encode(), expected)
        return ok

    def set_cookie(self) -> bytes:
        assert self.token is not None
        return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()
