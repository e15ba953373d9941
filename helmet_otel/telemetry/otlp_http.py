"""OTLP/HTTP for spans and log records: encoded bodies posted over one kept-alive connection.

The SDK's exporter posts every batch through requests and urllib3, which costs the worker far
more CPU per POST than the POST itself (session and adapter machinery, header merging, proxy
and netrc look-ups, a urllib3 pool), and so does ``http.client``. `HttpSender` posts over one
persistent HTTP/1.1 connection per signal of its own (`Connection`), reconnecting when the
collector closed it.

`http_settings` reads the ``OTEL_EXPORTER_OTLP_*`` variables as the SDK's exporter does (a
test compares the two): the per-signal ``..._TRACES_``/``..._LOGS_`` variable first, then the
general one. The signal endpoint is used as given; the general endpoint gets ``v1/traces`` or
``v1/logs`` appended. Headers (``key=value,...``, URL-encoded), compression (``gzip``,
``deflate`` or ``none``), the timeout in seconds (10), the CA certificate, the client key and
certificate. Without a CA certificate the roots are requests' (``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``, else certifi's), as the SDK's exporter would use.

What `http_settings` does not do itself, it answers with the reason instead, and the exporter
keeps the SDK's transport: a credential provider (``OTEL_PYTHON_EXPORTER_OTLP_HTTP_*
CREDENTIAL_PROVIDER``), an HTTP(S) proxy from the environment, user:password in the URL or a
``.netrc`` entry for the host, a scheme other than http/https.

Retries are the SDK's: up to six attempts on 429, 502, 503, 504 or a connection error, backing
off 1 s, 2 s, 4 s, ... (+-20 %) or as ``Retry-After`` says, while the timeout allows; a
connection error is first retried at once (a kept-alive connection the collector closed).
Any other answer fails the batch at once, and so does a collector whose certificate
does not verify (the SDK's transport retries that too); a redirect is not followed (an OTLP endpoint does not
move: set the final URL). `HttpSender.shutdown` cuts a backoff short and closes the socket, so a
hung collector releases the export thread at once.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import math
import netrc
import os
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers

__all__ = ["HttpSender", "HttpSettings", "http_settings"]

Signal = Literal["traces", "logs"]
DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 6
BACKOFF_S = 1.0  # the first backoff; it doubles with every retry
RETRYABLE = frozenset({429, 502, 503, 504})
JITTER = 0.2

_logger = logging.getLogger("opentelemetry.exporter.otlp.helmet_http")


@dataclass(frozen=True)
class HttpSettings:
    """Where and how one signal is posted."""

    url: str
    headers: dict[str, str] = field(default_factory=dict[str, str])
    compression: str = "none"  # "none", "gzip" or "deflate"
    timeout_s: float = DEFAULT_TIMEOUT_S
    certificate: str | None = None  # CA file or directory; None: requests' roots
    client_certificate: str | None = None
    client_key: str | None = None


def _user_agent() -> str:
    try:
        from opentelemetry.exporter.otlp.proto.http.version import __version__
    except ImportError:  # pragma: no cover - the exporter is a dependency
        return "OTel-OTLP-Exporter-Python"
    return f"OTel-OTLP-Exporter-Python/{__version__}"


def _pick(env: Mapping[str, str], signal: Signal, name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_{SIGNAL}_{name}``, else ``OTEL_EXPORTER_OTLP_{name}`` (unset or
    empty: None)."""
    return env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or env.get(
        f"OTEL_EXPORTER_OTLP_{name}"
    )


def _timeout(raw: str | None) -> float:
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


def _has_netrc_entry(host: str, env: Mapping[str, str]) -> bool:
    names = [env["NETRC"]] if env.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for name in names:
        path = os.path.expanduser(name)
        if os.path.exists(path):
            try:
                return netrc.netrc(path).authenticators(host) is not None
            except (netrc.NetrcParseError, OSError):
                return False
    return False


def _proxied(scheme: str, host: str, env: Mapping[str, str]) -> bool:
    """Whether requests may go through a proxy from the environment for this URL (``no_proxy``
    read more strictly than requests reads it: when in doubt, the SDK's transport posts)."""
    proxies = {k.lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    if not (proxies.get(f"{scheme}_proxy") or proxies.get("all_proxy")):
        return False
    no_proxy = proxies.get("no_proxy", "")
    if no_proxy == "*":
        return False
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        entry = entry.lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return False
    return True


def http_settings(signal: Signal, env: Mapping[str, str]) -> HttpSettings | str:
    """The settings of ``signal``'s exporter, or why `HttpSender` does not take it (then the
    SDK's transport does)."""
    provider = "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER"
    if env.get(provider) or env.get(provider.replace("_HTTP_", f"_HTTP_{signal.upper()}_")):
        return "a credential provider is configured"
    url = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
        url = f"{base.removesuffix('/')}/v1/{signal}"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as error:
        return f"the endpoint is not a URL: {error}"
    if parts.scheme not in ("http", "https") or not host:
        return f"the endpoint is not an http(s) URL with a host: {parts.scheme!r}"
    if parts.username is not None or parts.password is not None:
        return "the endpoint carries user:password"
    if _proxied(parts.scheme, host, env):
        return "a proxy is configured"
    headers = {
        "content-type": "application/x-protobuf",
        "user-agent": _user_agent(),
    }
    raw_headers = _pick(env, signal, "HEADERS") or ""
    headers.update(parse_env_headers(raw_headers, liberal=True))
    if "authorization" not in headers and _has_netrc_entry(host, env):
        return "a .netrc entry for the collector's host"
    compression = (_pick(env, signal, "COMPRESSION") or "none").strip().lower()
    if compression not in ("none", "gzip", "deflate"):
        compression = "none"
    if compression != "none" and "content-encoding" not in headers:
        headers["content-encoding"] = compression
    return HttpSettings(
        url=url,
        headers=headers,
        compression=compression,
        timeout_s=_timeout(_pick(env, signal, "TIMEOUT")),
        certificate=_pick(env, signal, "CERTIFICATE"),
        client_certificate=_pick(env, signal, "CLIENT_CERTIFICATE"),
        client_key=_pick(env, signal, "CLIENT_KEY"),
    )


def tls_context(settings: HttpSettings, env: Mapping[str, str]) -> ssl.SSLContext:
    """The TLS context of an https endpoint: the CA the settings name (a file or a directory),
    else requests' roots; the client certificate (and key) when given."""
    ca = settings.certificate or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if ca is None:
        try:
            import certifi

            ca = certifi.where()
        except ImportError:  # pragma: no cover - requests depends on certifi
            ca = None
    if ca is not None and os.path.isdir(ca):
        context = ssl.create_default_context(capath=ca)
    else:
        context = ssl.create_default_context(cafile=ca)
    if settings.client_certificate:
        context.load_cert_chain(settings.client_certificate, settings.client_key)
    return context


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no answer (a connection error or a timeout); 0: no trust
    retry_after_s: float | None = None
    error: str = ""


class BadAnswer(OSError):
    """The collector's answer is not HTTP/1.x as this client reads it (the connection goes)."""


_MAX_HEAD = 64 * 1024  # an answer's status line and headers at most
_READ = 64 * 1024


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delay-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


_LEGAL_NAME = re.compile(rb"[^:\s][^:\r\n]*").fullmatch  # (http.client's rules)
_ILLEGAL_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])").search


def request_head(method: str, host: str, port: int, default_port: int, path: str,
                 headers: Mapping[str, str]) -> bytes:  # fmt: skip
    """The request line and headers up to ``Content-Length: `` (its value and the blank line
    follow per request), as ``http.client`` writes them: ``Host`` (without the default port,
    an IPv6 address in brackets), ``Accept-Encoding: identity``, then ``headers``. Raises
    ValueError on a header that HTTP cannot carry (http.client would fail every request)."""
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        name = host.encode("idna")
    if ":" in host:
        name = b"[" + name + b"]"
    if port != default_port:
        name = b"%s:%d" % (name, port)
    lines = [f"{method} {path} HTTP/1.1".encode("ascii"), b"Host: " + name]
    lines.append(b"Accept-Encoding: identity")
    for key, value in headers.items():
        raw_key, raw_value = key.encode("ascii"), value.encode("latin-1")
        if not _LEGAL_NAME(raw_key):
            raise ValueError(f"invalid header name {key!r}")
        if _ILLEGAL_VALUE(raw_value):
            raise ValueError(f"invalid value of header {key!r}")
        lines.append(raw_key + b": " + raw_value)
    lines.append(b"Content-Length: ")
    return b"\r\n".join(lines)


class Reply:
    """What an HTTP/1.x answer says that a sender acts on."""

    __slots__ = ("close", "reason", "retry_after", "status")

    def __init__(self, status: int, reason: str, retry_after: str | None, close: bool) -> None:
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.close = close  # the collector closes the connection after it


class Connection:
    """One kept-alive HTTP/1.1 connection to a collector, without ``http.client``: a request
    is written with one system call (head and body gathered) and an answer read with as few
    as it takes (usually one), its headers scanned only for what a sender acts on. That took
    a POST of 512 records from ~130 to ~30 us of CPU (``http.client`` builds a buffered file,
    an email message and a response object per answer). Reads the answers ``http.client``
    reads: a status line and headers, informational answers skipped, a body by
    ``Content-Length``, chunked, or up to the end of the connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._gather = not isinstance(sock, ssl.SSLSocket)  # (TLS sockets have no sendmsg)
        self._buffer = bytearray()

    def request(self, head: bytes, body: bytes | bytearray) -> Reply:
        """Send ``head`` (up to ``Content-Length: ``) and ``body``; read the answer."""
        head = b"%s%d\r\n\r\n" % (head, len(body))
        sock = self.sock
        if self._gather:
            sent = sock.sendmsg((head, body))
            if sent < len(head):  # (the rest when the send buffer was full)
                sock.sendall(memoryview(head)[sent:])
                sock.sendall(body)
            elif sent < len(head) + len(body):
                sock.sendall(memoryview(body)[sent - len(head) :])
        else:
            sock.sendall(head + body)
        return self._answer()

    def _answer(self) -> Reply:
        while True:
            status, reason, fields, version = self._head()
            if not 100 <= status < 200:
                break
        buffer = self._buffer
        connection = fields.get(b"connection", b"").lower()
        close = b"close" in connection or (
            version == b"HTTP/1.0" and b"keep-alive" not in connection
        )
        length = fields.get(b"content-length")
        if status in (204, 304):
            pass
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            self._chunks()
        elif length is not None:
            try:
                size = int(length)
            except ValueError:
                raise BadAnswer(f"bad Content-Length: {length!r}") from None
            if size < 0:
                raise BadAnswer(f"bad Content-Length: {length!r}")
            self._fill(size)
            del buffer[:size]
        else:  # the body ends with the connection
            while self._read():
                buffer.clear()
            buffer.clear()
            close = True
        if buffer:  # nothing was asked for after the answer: start afresh
            buffer.clear()
            close = True
        retry_after = fields.get(b"retry-after")
        return Reply(
            status,
            reason,
            None if retry_after is None else retry_after.decode("latin-1"),
            close,
        )

    def _read(self) -> int:
        data = self.sock.recv(_READ)
        self._buffer += data
        return len(data)

    def _fill(self, size: int) -> None:
        """At least ``size`` bytes buffered (the collector closing first is an error)."""
        while len(self._buffer) < size:
            if not self._read():
                raise ConnectionResetError("the collector closed the connection")

    def _upto(self, marker: bytes, what: str) -> bytes:
        """The buffered bytes before ``marker`` (read until it comes), taken out with it."""
        buffer = self._buffer
        end = buffer.find(marker)
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                raise BadAnswer(f"{what} too long")
            if not self._read():
                raise ConnectionResetError("the collector closed the connection")
            end = buffer.find(marker)
        taken = bytes(buffer[:end])
        del buffer[: end + len(marker)]
        return taken

    def _line(self) -> bytes:
        return self._upto(b"\r\n", "a line")

    def _head(self) -> tuple[int, str, dict[bytes, bytes], bytes]:
        lines = self._upto(b"\r\n\r\n", "the answer's headers are").split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadAnswer(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                fields[name.strip().lower()] = value.strip()
        return int(code), reason.strip().decode("latin-1"), fields, version

    def _chunks(self) -> None:
        buffer = self._buffer
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadAnswer(f"bad chunk size: {line[:100]!r}") from None
            if size == 0:
                while self._line():  # trailers, up to a blank line
                    pass
                return
            self._fill(size + 2)
            del buffer[: size + 2]

    def close(self) -> None:
        self.sock.close()


class HttpSender:
    """Posts one signal's encoded bodies; `send` answers whether the collector took one."""

    def __init__(self, settings: HttpSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._head = request_head(
            "POST", self._host, self._port, 443 if self._https else 80, self._path,
            settings.headers,
        )  # fmt: skip
        self._context = (
            tls_context(settings, os.environ if env is None else env) if (self._https) else None
        )
        self._connection: Connection | None = None
        self._lock = threading.Lock()  # the connection, between send and shutdown
        self._stop = threading.Event()

    def send(self, data: bytes | bytearray) -> bool:
        """Post ``data`` (compressed as configured), retrying as the module docstring says."""
        body = self._compress(data)
        deadline = time.monotonic() + self.settings.timeout_s
        for attempt in range(MAX_ATTEMPTS):
            if self._stop.is_set():
                return False
            answer = self._post(body, deadline)
            if answer.status is None and deadline > time.monotonic() and not self._stop.is_set():
                answer = self._post(body, deadline)  # at once: a kept-alive connection closed
            status = answer.status
            if status is not None and 200 <= status < 300:
                return True
            if status is not None and status not in RETRYABLE:
                _logger.error(
                    "Failed to export %s batch code: %s, reason: %s",
                    self._path, status, answer.error or "unknown",
                )  # fmt: skip
                return False
            backoff = BACKOFF_S * 2**attempt * random.uniform(1 - JITTER, 1 + JITTER)
            if answer.retry_after_s is not None:
                backoff = answer.retry_after_s
            if attempt + 1 == MAX_ATTEMPTS or backoff > deadline - time.monotonic():
                _logger.error(
                    "Failed to export %s batch due to timeout or max retries: %s",
                    self._path, status or answer.error,
                )  # fmt: skip
                return False
            if self._stop.wait(backoff):
                return False
        return False

    def shutdown(self) -> None:
        """No more sends; a send waiting for a retry or an answer gives up now."""
        self._stop.set()
        with self._lock:
            connection = self._connection
        if connection is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _compress(self, data: bytes | bytearray) -> bytes | bytearray:
        if self.settings.compression == "gzip":
            return gzip.compress(data, compresslevel=6, mtime=0)
        if self.settings.compression == "deflate":
            return zlib.compress(data)
        return data

    def _connect(self, timeout_s: float) -> Connection:
        connection = self._connection
        if connection is None:
            sock = socket.create_connection((self._host, self._port), timeout_s)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._context is not None:
                    sock = self._context.wrap_socket(sock, server_hostname=self._host)
            except BaseException:
                sock.close()
                raise
            connection = Connection(sock)
            with self._lock:
                self._connection = connection
            if self._stop.is_set():  # (shutdown came while connecting: it saw no socket)
                raise ConnectionAbortedError("shut down")
        else:
            connection.sock.settimeout(timeout_s)
        return connection

    def _drop_connection(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _post(self, body: bytes | bytearray, deadline: float) -> _Answer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _Answer(None, error="timed out")
        try:
            reply = self._connect(remaining).request(self._head, body)
        except ssl.SSLCertVerificationError as error:  # retrying cannot mend it
            self._drop_connection()
            return _Answer(0, error=f"{type(error).__name__}: {error}")
        except (OSError, ValueError) as error:
            self._drop_connection()
            return _Answer(None, error=f"{type(error).__name__}: {error}")
        if reply.close:
            self._drop_connection()
        return _Answer(reply.status, _retry_after(reply.retry_after), reply.reason)


def sender_for(signal: Signal, env: Mapping[str, str]) -> tuple[HttpSender | None, str | None]:
    """``signal``'s sender, or None and why the SDK's transport stays."""
    settings = http_settings(signal, env)
    if isinstance(settings, str):
        return None, settings
    try:
        request_head("POST", "host", 80, 80, "/", settings.headers)
    except ValueError as error:  # (the SDK's transport fails such requests as it does)
        return None, f"a header HTTP cannot carry: {error}"
    try:
        return HttpSender(settings, env), None
    except (OSError, ssl.SSLError, ValueError) as error:  # an unreadable certificate, ...
        return None, f"TLS setup failed: {type(error).__name__}: {error}"
