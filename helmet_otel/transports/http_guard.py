"""The HTTP front's gate: Host and Origin (DNS rebinding), bearer tokens, failure rate limits.

Every check runs on the request head, before its body is read. A presented token is hashed at
once and never kept, logged or reported: an auth failure names the client address and a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
FAILURE_WINDOW = 60.0  # seconds in which `failure_limit` failures from one address earn a block


class TokenFileError(ValueError):
    """The token file cannot be read or has a bad line (the message names it)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def load_tokens(path: str) -> list[bytes]:
    """SHA-256 digests of the accepted tokens: one per line, plain or ``sha256:<hex>``; blank
    lines and ``#`` comments are skipped. Raises `TokenFileError`."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(
            f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    digests: list[bytes] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("sha256:"):
            try:
                digest = bytes.fromhex(text[7:])
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise TokenFileError(f"{path}:{number}: sha256: needs 64 hex digits")
            digests.append(digest)
        else:
            digests.append(hashlib.sha256(text.encode()).digest())
    if not digests:
        raise TokenFileError(f"{path}: no tokens in the file")
    return digests


def _host_name(value: str) -> str:
    """The host of a ``Host`` header value (``name:port``, ``[v6]:port``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass
class Verdict:
    status: int
    reason: str  # for the client and the security record; never contains the token
    principal: str | None = None


@dataclass
class Guard:
    """Host/Origin allow-lists and bearer tokens for one listening address."""

    listen_host: str
    tokens: list[bytes] = field(default_factory=list[bytes])
    allowed_hosts: Iterable[str] = ()
    allowed_origins: Iterable[str] = ()
    failure_limit: int = 10  # failures per address within FAILURE_WINDOW before 429; 0: never
    block_seconds: float = 60.0
    _hosts: frozenset[str] = field(init=False)
    _origins: frozenset[str] = field(init=False)
    _failures: dict[str, deque[float]] = field(init=False, default_factory=dict[str, deque[float]])
    _blocked: dict[str, float] = field(init=False, default_factory=dict[str, float])

    def __post_init__(self) -> None:
        hosts = {_host_name(h) for h in self.allowed_hosts}
        self.check_host = bool(hosts) or not is_wildcard(self.listen_host)
        if self.check_host:
            hosts |= LOOPBACK_NAMES
            if not is_wildcard(self.listen_host):
                hosts.add(self.listen_host.strip("[]").lower())
        self._hosts = frozenset(hosts)
        self._origins = frozenset(o.rstrip("/").lower() for o in self.allowed_origins)

    def host_ok(self, host: str | None) -> bool:
        if not self.check_host:
            return True
        return host is not None and _host_name(host) in self._hosts

    def origin_ok(self, origin: str | None) -> bool:
        """No Origin: not a browser, fine. Else its host must be one we serve, or it is listed."""
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        if origin in self._origins:
            return True
        try:
            host = urlsplit(origin).hostname
        except ValueError:
            return False
        if host is None:
            return False
        return host in self._hosts if self.check_host else host in self._origins

    def blocked(self, address: str, now: float | None = None) -> bool:
        until = self._blocked.get(address)
        if until is None:
            return False
        if (now if now is not None else time.monotonic()) < until:
            return True
        del self._blocked[address]
        return False

    def authenticate(self, authorization: str | None) -> Verdict | None:
        """None when the request may pass; else the refusal (401) and why."""
        if not self.tokens:
            return None
        if authorization is None:
            return Verdict(401, "missing bearer token")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Verdict(401, "not a bearer token")
        digest = hashlib.sha256(presented.strip().encode()).digest()
        matched = -1
        for index, accepted in enumerate(self.tokens):
            if hmac.compare_digest(digest, accepted):
                matched = index
        if matched < 0:
            return Verdict(401, "invalid bearer token")
        return None

    def principal(self, authorization: str | None) -> str | None:
        """Who the token says the client is (``token:<first 8 hex of its hash>``)."""
        if not self.tokens or authorization is None:
            return None
        presented = authorization.strip().partition(" ")[2].strip()
        return "token:" + hashlib.sha256(presented.encode()).hexdigest()[:8]

    def failed(self, address: str, now: float | None = None) -> bool:
        """Count an auth failure from ``address``; True when it now earns a block (429)."""
        if self.failure_limit <= 0:
            return False
        now = time.monotonic() if now is None else now
        times = self._failures.setdefault(address, deque())
        times.append(now)
        while times and times[0] < now - FAILURE_WINDOW:
            times.popleft()
        if len(times) >= self.failure_limit:
            self._blocked[address] = now + self.block_seconds
            times.clear()
            return True
        if len(self._failures) > 10000:  # forget quiet addresses: bounded memory
            for key in [
                k for k, v in self._failures.items() if not v or v[-1] < now - FAILURE_WINDOW
            ]:
                del self._failures[key]
        return False
