"""The embedded local store: an OTel exporter into SQLite plus the query API the CLI uses.

Writing (behind the telemetry worker's batch queues, or the SDK's batch processors)::

    from helmet_otel.store import Store, StoreLogExporter, StoreSpanExporter, default_store_path

    store = Store.open(path, max_bytes=None, max_age_s=None)  # never raises
    BatchSpanProcessor(StoreSpanExporter(store))
    BatchLogRecordProcessor(StoreLogExporter(store))
    ...
    store.dropped   # records that could not be written (degraded store)
    store.close()   # after the providers shut down

``Store.open(path=None, *, max_bytes=None, max_age_s=None, lock_timeout_s=10.0, report=None)``:
``path`` defaults to ``default_store_path()`` (``$HELMET_STORE`` or
``<user data dir>/helmet-otel/store.db``); ``max_bytes`` / ``max_age_s`` default to
``$HELMET_STORE_MAX_BYTES`` / ``$HELMET_STORE_MAX_AGE`` or 500 MB / 14 days (0 disables).

Reading (the viewer commands): ``helmet_otel.store.query.Reader``. Schema and export formats:
``docs/store.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from helmet_otel.store.paths import DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES, default_store_path
from helmet_otel.store.schema import SCHEMA_VERSION, StoreError
from helmet_otel.store.writer import Store

if TYPE_CHECKING:
    from helmet_otel.store.exporters import StoreExporter, StoreLogExporter, StoreSpanExporter

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_BYTES",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "StoreExporter",
    "StoreLogExporter",
    "StoreSpanExporter",
    "default_store_path",
]


def __getattr__(name: str) -> object:
    # The exporters import the OTel SDK; the viewer commands never need it, so load it lazily.
    if name in ("StoreExporter", "StoreLogExporter", "StoreSpanExporter"):
        from helmet_otel.store import exporters

        return getattr(exporters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
