"""Our OTLP/HTTP sender: the SDK exporter's configuration from the environment, its retries and
its kept-alive connection, against the real test receiver (over TLS too, with a certificate made
here)."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from helmet_otel.telemetry import otlp_http
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from helmet_otel.telemetry.otlp_exporters import otlp_exporter
from helmet_otel.telemetry.otlp_http import HttpSender, HttpSettings, http_settings
from tests.otlp_receiver import OTLPReceiver, dead_endpoint
from tests.telemetry.records import LOGS, SPANS

BODY = OtlpEncoder().spans(SPANS)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("OTEL_") or k.lower().endswith("_proxy")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoffs of 10 ms instead of seconds (their doubling and jitter stay)."""
    monkeypatch.setattr(otlp_http, "BACKOFF_S", 0.01)


def _sender(url: str, **fields: Any) -> HttpSender:
    headers = {"content-type": "application/x-protobuf", **fields.pop("headers", {})}
    return HttpSender(HttpSettings(url=url, headers=headers, **fields))


# -- the environment, read as the SDK's exporter reads it ----------------------------------

ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example/base"},
    {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://spans:9999/custom/path",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:9999/other",
    },
    {
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,X-Tenant = a=b , bad",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
    },
    {
        "OTEL_EXPORTER_OTLP_HEADERS": "general=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "spans=2",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "logs=3",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate",
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "brotli",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "nonsense",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "7",
    },
    {
        "OTEL_EXPORTER_OTLP_HEADERS": "content-encoding=identity",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca/general.pem",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/ca/spans.pem",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/client/cert.pem",
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY": "/client/logs.key",
    },
    {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/client/both.pem"},
]


def _sdk_view(exporter: Any) -> dict[str, Any]:
    client, session = exporter._client, exporter._client._transport._session
    return {
        "url": exporter._endpoint,
        "headers": {k.lower(): v for k, v in client._headers.items()},
        "compression": client._compression.value,
        "timeout_s": client._timeout,
        "verify": session.verify,
        "cert": session.cert,
    }


def _our_view(settings: HttpSettings) -> dict[str, Any]:
    cert = settings.client_certificate
    if cert and settings.client_key:
        cert = (cert, settings.client_key)
    return {
        "url": settings.url,
        "headers": settings.headers,
        "compression": settings.compression,
        "timeout_s": settings.timeout_s,
        "verify": settings.certificate or True,
        "cert": cert,
    }


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=range(len(ENVIRONMENTS)))
def test_the_settings_are_the_sdk_exporters(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for signal, sdk in (("traces", OTLPSpanExporter()), ("logs", OTLPLogExporter())):
        ours = http_settings(signal, os.environ)
        assert isinstance(ours, HttpSettings), ours
        assert _our_view(ours) == _sdk_view(sdk), signal


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "x"}, "a credential provider"),
        ({"OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER": "x"}, "a credential"),
        ({"HTTPS_PROXY": "http://proxy:3128", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c"}, "proxy"),
        ({"all_proxy": "http://proxy:3128", "no_proxy": "other.example"}, "a proxy"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector:4318"}, "user:password"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector"}, "not an http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:99999"}, "not a URL"),
    ],
)
def test_what_the_sender_does_not_take_stays_with_the_sdk(
    env: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = http_settings("logs", os.environ)
    assert isinstance(settings, str) and reason in settings, settings
    if "credential" in reason:
        return  # (the SDK's exporter loads the provider, an entry point not installed here)
    exporter = otlp_exporter("logs", "http/protobuf", OtlpEncoder())
    try:
        assert (exporter.transport, exporter.sender_reason) == ("sdk", settings)
        assert exporter.fast_path  # our bytes still, through the SDK's client
    finally:
        exporter.shutdown()


def test_a_proxy_bypassed_for_the_host_keeps_our_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", "example.com,.internal")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel.internal:4318")
    assert isinstance(http_settings("traces", os.environ), HttpSettings)


def test_a_netrc_entry_for_the_host_stays_with_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector login me password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert http_settings("traces", os.environ) == "a .netrc entry for the collector's host"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer t")
    assert isinstance(http_settings("traces", os.environ), HttpSettings)


# -- posting ---------------------------------------------------------------------------------


def test_the_worker_posts_through_our_sender_over_one_connection(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=k%201")
    encoder = OtlpEncoder()
    spans = otlp_exporter("traces", "http/protobuf", encoder)
    logs = otlp_exporter("logs", "http/protobuf", encoder)
    try:
        assert (spans.transport, spans.sender_reason) == ("helmet", None)
        assert (logs.transport, logs.sender_reason) == ("helmet", None)
        for _ in range(3):
            assert spans.export(SPANS) is SpanExportResult.SUCCESS
        assert logs.export(LOGS).name == "SUCCESS"
    finally:
        spans.shutdown()
        logs.shutdown()
    assert receiver.raw_bodies == [BODY, BODY, BODY, OtlpEncoder().logs(LOGS)]
    assert receiver.requests == [("traces", 200)] * 3 + [("logs", 200)]
    assert receiver.connections == 2  # one kept alive per signal
    headers = receiver.headers[0]
    assert headers["api-key"] == "k 1"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
    assert headers["content-length"] == str(len(BODY))
    assert "content-encoding" not in headers


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_a_compressed_body(receiver: OTLPReceiver, compression: str) -> None:
    sender = _sender(
        f"{receiver.endpoint}/v1/traces",
        compression=compression,
        headers={"content-encoding": compression},
    )
    assert sender.send(BODY)
    assert receiver.raw_bodies == [BODY]  # the receiver decompressed it
    assert receiver.headers[0]["content-encoding"] == compression
    sent = int(receiver.headers[0]["content-length"])
    packed = gzip.compress(BODY, 6, mtime=0) if compression == "gzip" else zlib.compress(BODY)
    assert sent == len(packed)


def test_retries_on_the_retryable_answers_then_succeeds(
    receiver: OTLPReceiver, fast_backoff: None
) -> None:
    receiver.script = [429, 502, 503, 504]
    assert _sender(f"{receiver.endpoint}/v1/traces").send(BODY)
    assert [status for _, status in receiver.requests] == [429, 502, 503, 504, 200]
    assert receiver.raw_bodies == [BODY] * 5


def test_gives_up_after_six_attempts(receiver: OTLPReceiver, fast_backoff: None) -> None:
    receiver.status = 503
    assert not _sender(f"{receiver.endpoint}/v1/traces").send(BODY)
    assert receiver.requests == [("traces", 503)] * 6


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_another_answer_fails_at_once(receiver: OTLPReceiver, status: int) -> None:
    receiver.status = status
    assert not _sender(f"{receiver.endpoint}/v1/traces").send(BODY)
    assert receiver.requests == [("traces", status)]


def test_retry_after_beyond_the_timeout_gives_up_at_once(receiver: OTLPReceiver) -> None:
    receiver.status, receiver.retry_after = 429, "30"
    started = time.monotonic()
    assert not _sender(f"{receiver.endpoint}/v1/traces", timeout_s=5).send(BODY)
    assert time.monotonic() - started < 2.0
    assert receiver.requests == [("traces", 429)]


def test_retry_after_is_waited_for(receiver: OTLPReceiver) -> None:
    receiver.script, receiver.retry_after = [503], "0.2"
    started = time.monotonic()
    assert _sender(f"{receiver.endpoint}/v1/traces").send(BODY)
    assert time.monotonic() - started >= 0.2
    assert [status for _, status in receiver.requests] == [503, 200]


def test_a_connection_the_collector_closed_is_reopened_at_once(receiver: OTLPReceiver) -> None:
    sender = _sender(f"{receiver.endpoint}/v1/traces")
    assert sender.send(BODY)
    receiver.stop()  # closes the kept-alive connection...
    receiver.start()  # ...and listens again, on another port
    sender = _sender(f"{receiver.endpoint}/v1/traces")
    assert sender.send(BODY)
    for conn in list(receiver._connections):  # pyright: ignore[reportPrivateUsage]
        conn.close()  # the server side of the kept-alive connection goes away
    started = time.monotonic()
    assert sender.send(BODY)  # no backoff: the stale connection was retried at once
    assert time.monotonic() - started < 0.9
    assert receiver.raw_bodies == [BODY] * 3


def test_a_dead_collector_fails_within_the_timeout(fast_backoff: None) -> None:
    started = time.monotonic()
    assert not _sender(f"{dead_endpoint()}/v1/traces", timeout_s=1.0).send(BODY)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("fault", ["hung", "dead", "429"])
def test_shutdown_releases_a_send_at_once(receiver: OTLPReceiver, fault: str) -> None:
    url = f"{receiver.endpoint}/v1/traces"
    if fault == "hung":
        receiver.hold()
    elif fault == "dead":
        url = f"{dead_endpoint()}/v1/traces"
    else:
        receiver.status = 429
    sender = _sender(url, timeout_s=30.0)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(sender.send(BODY)))
    thread.start()
    if fault != "dead":
        receiver.wait_for(lambda r: len(r.requests) >= 1)
    sender.shutdown()
    started = time.monotonic()
    thread.join(2.0)
    assert not thread.is_alive() and result == [False]
    assert time.monotonic() - started < 0.5
    receiver.release()
    assert not sender.send(BODY)  # and it stays shut


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def test_https_with_the_configured_certificate(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = certificate
    with OTLPReceiver(tls=certificate) as receiver:
        assert receiver.endpoint.startswith("https://localhost:")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        untrusted = otlp_exporter("traces", "http/protobuf", OtlpEncoder())
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", cert)
        trusted = otlp_exporter("traces", "http/protobuf", OtlpEncoder())
        try:
            assert (trusted.transport, untrusted.transport) == ("helmet", "helmet")
            started = time.monotonic()
            assert untrusted.export(SPANS) is SpanExportResult.FAILURE  # not a trusted root...
            assert time.monotonic() - started < 1.0  # ...which no retry mends
            assert receiver.raw_bodies == []
            assert trusted.export(SPANS) is SpanExportResult.SUCCESS
            assert trusted.export(SPANS) is SpanExportResult.SUCCESS
        finally:
            trusted.shutdown()
            untrusted.shutdown()
        assert receiver.raw_bodies == [BODY, BODY]


def test_an_unreadable_client_certificate_stays_with_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(tmp_path / "missing.pem"))
    sender, reason = otlp_http.sender_for("logs", os.environ)
    assert sender is None and reason is not None and reason.startswith("TLS setup failed")


# -- the answers our connection reads, from a scripted server over a real socket ------------


class ScriptedCollector:
    """Answers each request with the next scripted bytes (then closes the connection when told),
    keeping the raw requests and the connection each came on."""

    def __init__(self, script: list[tuple[bytes, bool]]) -> None:
        self.script = script
        self.requests: list[tuple[int, bytes]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connections = 0
        while self.script:
            conn, _ = self._listener.accept()
            connections += 1
            with conn:
                data = b""
                while self.script:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, data = data.partition(b"\r\n\r\n")
                    if not head:
                        break
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    while len(data) < length:
                        data += conn.recv(65536)
                    self.requests.append((connections, head + b"\r\n\r\n" + data[:length]))
                    data = data[length:]
                    answer, close = self.script.pop(0)
                    conn.sendall(answer)
                    if close:
                        break
        self._listener.close()

    def join(self) -> None:
        self._thread.join(5.0)
        assert not self._thread.is_alive()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_the_request_is_what_http_client_writes_and_answers_are_read_in_every_framing(
    fast_backoff: None,
) -> None:
    collector = ScriptedCollector([
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False),  # informational, then the answer
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3;x=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n", False),
        (b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),  # (the retry, on the same connection)
        (b"HTTP/1.0 200 OK\r\n\r\nthe body ends with the connection", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (b"SSH-2.0-not-http\r\n\r\n", True),  # not HTTP: a connection error, retried at once
        (OK + b"unasked bytes", False),  # taken, but the connection is not trusted further
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!", False),
    ])  # fmt: skip
    sender = _sender(f"http://127.0.0.1:{collector.port}/v1/traces", headers={"api-key": "k 1"})
    assert [sender.send(BODY) for _ in range(7)] == [True] * 6 + [False]
    sender.shutdown()
    collector.join()
    head = (
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept-Encoding: identity\r\n"
        b"content-type: application/x-protobuf\r\napi-key: k 1\r\nContent-Length: %d\r\n\r\n"
    ) % (collector.port, len(BODY))
    assert collector.requests == [
        (n, head + BODY) for n in (1, 1, 1, 1, 1, 2, 3, 4, 5)
    ]  # fmt: skip


def test_a_header_http_cannot_carry_stays_with_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%0D%0Ab")
    sender, reason = otlp_http.sender_for("traces", os.environ)
    assert (
        sender is None and reason == "a header HTTP cannot carry: invalid value of header 'api-key'"
    )
