"""OTLP/gRPC is the ``grpc`` extra: asked for without it, the worker says so once on stderr
and exports over http/protobuf instead of crashing."""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

import helmet_otel.telemetry
from helmet_otel import semconv as sc
from helmet_otel.telemetry import otlp_exporters
from helmet_otel.telemetry.otlp_encoding import OtlpEncoder
from tests.e2e.helpers import DEMO_SERVER, RawProcess
from tests.otlp_receiver import OTLPReceiver
from tests.telemetry.helpers import INIT, line, proxy_env
from tests.telemetry.records import LOGS, SPANS

MESSAGE = (
    "helmet-otel: OTLP over gRPC needs the grpc extra: pip install 'helmet-otel[grpc]'; "
    "using http/protobuf\n"
)
GRPC_MODULES = ("grpc.", "opentelemetry.exporter.otlp.proto.grpc")  # and grpc itself


@pytest.fixture
def without_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of grpc and of the SDK's gRPC exporters fail, as they do without the extra."""
    real_import = builtins.__import__

    def fake_import(
        name: str,
        globals: Mapping[str, object] | None = None,
        locals: Mapping[str, object] | None = None,
        fromlist: Sequence[str] = (),
        level: int = 0,
    ) -> Any:
        if level == 0 and (name == "grpc" or name.startswith(GRPC_MODULES)):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(sys.modules, "helmet_otel.telemetry.otlp_grpc", raising=False)
    monkeypatch.delattr(helmet_otel.telemetry, "otlp_grpc", raising=False)
    monkeypatch.setattr(otlp_exporters, "_said", set[str]())


@pytest.mark.usefixtures("without_grpc")
def test_grpc_without_the_extra_says_so_once_and_exports_over_http(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        encoder = OtlpEncoder()
        spans = otlp_exporters.otlp_exporter("traces", "grpc", encoder)
        logs = otlp_exporters.otlp_exporter("logs", "grpc", encoder)
        metrics = otlp_exporters.otlp_exporter("metrics", "grpc", encoder)
        assert capsys.readouterr().err == MESSAGE  # one line for the three signals
        assert isinstance(spans.sdk, OTLPSpanExporter) and spans.fast_path
        assert isinstance(logs.sdk, OTLPLogExporter) and logs.fast_path
        assert isinstance(metrics, OTLPMetricExporter)
        try:
            assert spans.export(SPANS) is SpanExportResult.SUCCESS
            assert logs.export(LOGS) is LogRecordExportResult.SUCCESS
        finally:
            for exporter in (spans, logs, metrics):
                exporter.shutdown()
    assert [signal for signal, _ in rx.requests] == ["traces", "logs"]
    assert (len(rx.spans()), len(rx.logs())) == (len(SPANS), len(LOGS))


@pytest.mark.usefixtures("without_grpc")
def test_http_needs_no_grpc(capsys: pytest.CaptureFixture[str]) -> None:
    spans = otlp_exporters.otlp_exporter("traces", "http/protobuf", OtlpEncoder())
    spans.shutdown()
    assert isinstance(spans.sdk, OTLPSpanExporter)
    assert capsys.readouterr().err == ""
    assert "helmet_otel.telemetry.otlp_grpc" not in sys.modules


@pytest.mark.e2e
def test_the_proxy_without_the_extra_exports_over_http(tmp_path: Path) -> None:
    """The worker, started by a real proxy where grpc cannot be imported."""
    (tmp_path / "grpc.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'grpc'\", name='grpc')\n"
    )
    python_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}}  # fmt: skip
    argv = [sys.executable, "-m", "helmet_otel", "--no-store", *DEMO_SERVER]
    with OTLPReceiver() as rx:  # http/protobuf, where the worker falls back to
        env = proxy_env(rx.endpoint, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                      "PYTHONPATH": python_path})  # fmt: skip
        with RawProcess(argv, env=env) as proxy:
            proxy.write(line(INIT) + line(call))
            proxy.stdout.wait(lambda data: b'"id":2' in data, timeout=20)
            proxy.close_stdin()
            assert proxy.wait(timeout=20) == 0
            assert proxy.stderr.join(timeout=20)  # the worker is gone too
            stderr = proxy.stderr.data().decode()
        rx.wait_for(lambda r: sc.EVENT_PROXY_CLOSE in {x["event_name"] for x in r.logs()}, 20)
    assert stderr.count(MESSAGE) == 1, stderr
    names = {(s["name"], s["kind"]) for s in rx.spans()}
    assert {("tools/call echo", "SERVER"), ("tools/call echo", "CLIENT")} <= names
