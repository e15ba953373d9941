"""The seam where telemetry and policy plug into the relay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

from helmet_otel.core.envelope import Envelope
from helmet_otel.core.session import Restart, Session
from helmet_otel.protocol.message import Kind


class Interceptor(Protocol):
    """Sees every message; runs on the relay's event loop, so it must be cheap.

    ``before_forward`` may rewrite ``env.wire`` or set ``env.reply`` (then the message is not
    forwarded and the reply goes back to the sender). ``after_forward`` sees the message once it
    has been handed to the transport, with the session already updated.
    """

    def before_forward(self, env: Envelope) -> None: ...

    def after_forward(self, env: Envelope) -> None: ...

    def session_started(self, session: Session, upstream: dict[str, object]) -> None: ...

    def session_ended(self, session: Session) -> None: ...

    def upstream_stderr(self, session: Session, line: bytes, ts: int) -> None: ...

    def upstream_failed(self, session: Session, reason: str) -> None: ...

    def upstream_restarted(self, session: Session, restart: Restart) -> None: ...


class BaseInterceptor:
    """No-op implementations, so an interceptor only writes what it needs.

    ``before_kinds`` and ``after_kinds`` name the kinds of message its ``before_forward`` and
    ``after_forward`` want (None: every kind): the relay calls a hook only for those, and not
    at all while it is `BaseInterceptor`'s no-op. (A call costs more than it seems on the
    relay's loop, which runs each message with caches other processes have just used.)"""

    before_kinds: ClassVar[frozenset[Kind] | None] = None
    after_kinds: ClassVar[frozenset[Kind] | None] = None

    def before_forward(self, env: Envelope) -> None:
        return None

    def after_forward(self, env: Envelope) -> None:
        return None

    def session_started(self, session: Session, upstream: dict[str, object]) -> None:
        return None

    def session_ended(self, session: Session) -> None:
        return None

    def upstream_stderr(self, session: Session, line: bytes, ts: int) -> None:
        return None

    def upstream_failed(self, session: Session, reason: str) -> None:
        return None

    def upstream_restarted(self, session: Session, restart: Restart) -> None:
        return None


class InterceptorFactory(Protocol):
    """Process-wide part of an interceptor (a policy engine, the telemetry channel): makes the
    interceptor of each new session, so per-session state needs no lookup per message."""

    def for_session(self, session: Session) -> Interceptor: ...


def session_interceptors(
    factories: Sequence[InterceptorFactory], session: Session
) -> list[Interceptor]:
    """The session's interceptors, in the factories' order (the order `before_forward` runs)."""
    return [factory.for_session(session) for factory in factories]
