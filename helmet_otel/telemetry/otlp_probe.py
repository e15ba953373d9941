"""Ask an OTLP endpoint whether it takes exports (``helmet-otel doctor``).

For every signal that has a destination, one real export request, resolved the way the SDK's
exporters resolve it (a per-signal ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` as it is; else the
generic endpoint, ``--otlp-endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``, plus
``/v1/<signal>`` over http/protobuf), with the configured headers and certificate. The request
is empty (an ``Export*ServiceRequest`` with no resource: zero bytes of protobuf), so the
collector answers it like any export and nothing reaches the backends. What the collector
answered (status, reason, the start of its body) is the result; header values are never shown.
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from helmet_otel.config import ProxyOptions, otlp_signals

__all__ = ["ProbeResult", "probe_otlp"]

_GRPC_SERVICES = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    signal: str
    protocol: str
    url: str
    ok: bool
    answer: str  # what the collector answered, or why nothing answered
    ms: float
    headers: tuple[str, ...]  # names of the headers sent (never their values)


def _env(env: Mapping[str, str], signal: str, name: str) -> str | None:
    value = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}") or env.get(
        f"OTEL_EXPORTER_OTLP_{name}"
    )
    return value.strip() if value and value.strip() else None


def _headers(text: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for part in (text or "").split(","):
        name, eq, value = part.partition("=")
        if eq and name.strip():
            headers[urllib.parse.unquote(name.strip())] = urllib.parse.unquote(value.strip())
    return headers


def _protocol(signal: str, options: ProxyOptions, env: Mapping[str, str]) -> str:
    return options.otlp_protocol or _env(env, signal, "PROTOCOL") or "http/protobuf"


def _url(signal: str, protocol: str, options: ProxyOptions, env: Mapping[str, str]) -> str:
    own = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if own:
        return own
    base = (options.otlp_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).strip()
    if protocol == "grpc":
        return base
    return base.rstrip("/") + f"/v1/{signal}"


def _timeout(env: Mapping[str, str], signal: str) -> float:
    text = _env(env, signal, "TIMEOUT")
    try:
        return min(max(float(text) / 1000, 0.1), 10.0) if text else 5.0
    except ValueError:
        return 5.0


def _snippet(body: bytes) -> str:
    """The start of an answer's body when it is text (a protobuf status is not shown)."""
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return text if text.isprintable() and "\ufffd" not in text else ""


def _post(
    url: str, headers: dict[str, str], timeout: float, cafile: str | None
) -> tuple[bool, str]:
    request = urllib.request.Request(
        url, data=b"", method="POST",
        headers={**headers, "Content-Type": "application/x-protobuf"},
    )  # fmt: skip
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            status, reason = answer.status, answer.reason
            return 200 <= status < 300, f"answered {status} {reason}"
    except urllib.error.HTTPError as exc:
        body = _snippet(exc.read())
        return False, f"answered {exc.code} {exc.reason}" + (f": {body}" if body else "")
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        return False, f"no answer: {why}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return False, f"no answer: {exc}"


def _grpc(
    url: str, headers: dict[str, str], timeout: float, signal: str, env: Mapping[str, str]
) -> tuple[bool, str]:
    try:
        import grpc
    except ImportError:
        return False, "gRPC is not installed (pip install 'helmet-otel[grpc]')"
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    target = parsed.netloc or parsed.path
    insecure = parsed.scheme == "http" or (_env(env, signal, "INSECURE") or "").lower() == "true"
    if insecure:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
    try:

        def same(data: bytes) -> bytes:
            return data

        call = channel.unary_unary(
            _GRPC_SERVICES[signal], request_serializer=same, response_deserializer=same
        )
        call(b"", timeout=timeout, metadata=tuple((k.lower(), v) for k, v in headers.items()))
        return True, "answered OK"
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownVariableType]
        details = exc.details() if hasattr(exc, "details") else ""  # pyright: ignore[reportAttributeAccessIssue,reportUnknownMemberType,reportUnknownVariableType]
        name = getattr(code, "name", str(code))  # pyright: ignore[reportUnknownArgumentType]
        return False, f"answered {name}" + (f": {details}" if details else "")
    finally:
        channel.close()


def probe_otlp(options: ProxyOptions, env: Mapping[str, str]) -> list[ProbeResult]:
    """One empty export per signal with a destination (none: an empty list)."""
    results: list[ProbeResult] = []
    for signal in sorted(otlp_signals(env, options.otlp_endpoint)):
        protocol = _protocol(signal, options, env)
        url = _url(signal, protocol, options, env)
        headers = _headers(_env(env, signal, "HEADERS"))
        timeout = _timeout(env, signal)
        started = time.monotonic()
        if protocol == "grpc":
            ok, answer = _grpc(url, headers, timeout, signal, env)
        else:
            ok, answer = _post(url, headers, timeout, _env(env, signal, "CERTIFICATE"))
        ms = (time.monotonic() - started) * 1000
        results.append(ProbeResult(signal, protocol, url, ok, answer, ms, tuple(headers)))
    return results
