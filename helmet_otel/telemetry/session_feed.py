"""The relay side of telemetry, per session: `SessionFeed`, the interceptor that assigns trace
and span ids, writes trace context into forwarded requests, and appends each message to the
process's batch (`feed.TelemetryFeed`) under the session's key.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, cast

from helmet_otel.core.envelope import C2S, HTTP_TRACEPARENT, Envelope
from helmet_otel.core.interceptor import BaseInterceptor
from helmet_otel.core.session import Restart, Session
from helmet_otel.core.verdicts import DECISION, FINDINGS, POLICY_LOADED, Decision, Finding
from helmet_otel.protocol.message import BLANK, ERROR, REQUEST, RESPONSE, Kind, id_key
from helmet_otel.protocol.splice import first_meta, with_meta_entry
from helmet_otel.telemetry.frames import (
    FLAG_PROXY,
    FLAG_REPLIED,
    FLAG_S2C,
    STDERR_LINE_MAX,
    WHOLE,
    End,
    Failed,
    Info,
    Msg,
    Restarted,
    Security,
    Segment,
    Start,
    Stderr,
    summarize,
)

if TYPE_CHECKING:
    from helmet_otel.telemetry.feed import TelemetryFeed

PROPAGATE_MAX_BYTES = 1024 * 1024  # larger requests are forwarded without trace context
_SPAN_MASK = (1 << 64) - 1
_getrandbits = random.getrandbits
_pack_whole = WHOLE.pack
_CANCELLED = "notifications/cancelled"
MAX_LOST_SAMPLES = 4096  # lost sampled requests remembered per session for their responses


def _verdict(annotations: dict[str, object]) -> bool:
    """Whether a policy decided on the message or a detector flagged it."""
    return DECISION in annotations or FINDINGS in annotations or POLICY_LOADED in annotations


class SessionFeed(BaseInterceptor):
    """One session's interceptor: assigns trace and span ids, writes trace context into the
    forwarded requests, and appends each message to the process's batch under the session's
    key (the worker keeps one trace, one set of records and one store row per key)."""

    before_kinds = frozenset((Kind.REQUEST,))  # (ids and trace context: requests only)
    after_kinds = frozenset(Kind) - {Kind.BLANK}  # (a blank line is no message)

    def __init__(self, feed: TelemetryFeed, session: Session, key: int) -> None:
        self._feed = feed
        self.session = session
        self.key = key
        self._revision = 0
        # requests larger than this are forwarded without our trace context (-1: none is)
        self._propagate_max = PROPAGATE_MAX_BYTES if feed.options.propagate else -1
        self._max_requests = feed.options.trace_max_requests
        self.trace_id = _getrandbits(128) or 1
        self.root_span_id = _getrandbits(64) or 1
        self._segment_requests = 0
        # our traceparent, JSON-encoded, is head + client span id + tail; the head follows
        # the trace id
        self._tp_head = b""  # '"00-<trace id>-' of the current trace
        self._tp_tail = b'-01"' if feed.sampled else b'-00"'
        # ... and as the first member of params (`first_meta`), with a %016x for the span
        # id: followed by a comma, and alone
        self._tp_first = self._tp_alone = b""
        self._trace_context()
        self._upstream: dict[str, object] = {}
        # requests lost at a full buffer while sampled, by (c2s, id): what they stood for
        self._lost_samples: dict[tuple[bool, tuple[bool, object]], int] = {}

    # -- interceptor hooks (on the relay's loop) --------------------------------------------
    def before_forward(self, env: Envelope) -> None:
        msg = env.msg
        if msg.kind is not REQUEST:
            return
        feed = self._feed
        # A call a policy decided on (or a detector flagged: only they annotate a request
        # before us) is always traced; any other may be shed, and then gets no ids, no splice.
        annotations = env.annotations
        if not annotations and len(feed.batch) + feed.backlog.size < feed.open_limit:
            feed.tick += 1  # the usual call, traced (what `shed` counts)
        elif self._shed(env, feed, annotations):
            return
        else:
            # the calls it stands for; its response (through the session's pending request) too
            env.weight = 1 if annotations and _verdict(annotations) else feed.every
        bits = _getrandbits(128)  # both span ids from one draw
        env.server_span_id = (bits & _SPAN_MASK) or 1
        env.client_span_id = (bits >> 64) or 1
        if env.direction is not C2S:
            return
        self._segment_requests += 1
        if self._segment_requests > self._max_requests:
            self._roll_over()
            # Handed over in after_forward, right before this message: frames stay in order.
            env.annotations["segment"] = (self.trace_id, self.root_span_id)
        # Our traceparent into params._meta. (The client's own traceparent, which becomes a
        # span link, the worker reads from the message.) The usual request (params an object
        # without _meta, no escapes: `first_meta`) takes one format and one replace.
        payload = msg.payload
        raw = env.raw
        if payload is not None and len(raw) <= self._propagate_max:
            params = payload.get("params")
            wire = None
            if type(params) is dict:
                member = (self._tp_first if params else self._tp_alone) % env.client_span_id
                wire = first_meta(raw, params, member)  # pyright: ignore[reportUnknownArgumentType]
            if wire is not None:
                env.wire = wire
            else:
                self._inject(env, payload)

    def _shed(self, env: Envelope, feed: TelemetryFeed, annotations: dict[str, object]) -> bool:
        """Whether the request is shed (counted), when it does not take the short way in
        `before_forward` (it has a verdict, the governor samples, or the buffer is full)."""
        shed = feed.overflowing() and feed.shed() if annotations else feed.shed()
        if shed and feed.every > 1 and env.msg.id is not None and feed.lost_weight > 1:
            # a sample lost: its response counts with the same weight
            feed.lost_weight = 0
            if len(self._lost_samples) < MAX_LOST_SAMPLES:
                self._lost_samples[(env.direction is C2S, id_key(env.msg.id))] = feed.every
        return shed

    def _roll_over(self) -> None:
        self._segment_requests = 1
        self.trace_id = _getrandbits(128) or 1
        self.root_span_id = _getrandbits(64) or 1
        self._trace_context()

    def _inject(self, env: Envelope, payload: dict[str, Any]) -> None:
        """Write our traceparent into ``params._meta`` (made when absent or null) by splicing
        it into the sender's bytes; when that cannot be done exactly, forward them untouched.
        (The usual request takes the short way in `before_forward`.)"""
        encoded = self._tp_head + b"%016x" % env.client_span_id + self._tp_tail
        wire = with_meta_entry(env.raw, payload, "traceparent", encoded)
        if wire is not None:
            env.wire = wire

    def _trace_context(self) -> None:
        """The pieces of our traceparent for the current trace (its id is set only here and
        in `_roll_over`)."""
        self._tp_head = head = b'"00-%032x-' % self.trace_id
        member = b'"_meta":{"traceparent":' + head + b"%016x" + self._tp_tail + b"}"
        self._tp_first, self._tp_alone = member + b",", member

    def after_forward(self, env: Envelope) -> None:
        """Hand the message over: a traced request, or the answer to one, without a verdict
        and small enough to go whole, takes the short way (`_hand_over` is the whole story)."""
        if env.annotations:
            self._hand_over(env)
            return
        kind = env.msg.kind
        if kind is REQUEST:
            span = env.server_span_id
            if not span:  # shed in before_forward
                return
            weight = env.weight
            flags = FLAG_REPLIED if env.reply is not None else 0
        elif kind is RESPONSE or kind is ERROR:
            request = env.request
            if request is None or not request.span_id:
                self._hand_over(env)
                return
            weight = request.weight
            span = 0
            flags = FLAG_PROXY if env.proxy else 0
        else:
            self._hand_over(env)
            return
        feed = self._feed
        raw = env.raw
        size = len(raw)
        if size > feed.body_cap or self.session.revision != self._revision:
            self._hand_over(env)
            return
        if env.direction is not C2S:
            flags |= FLAG_S2C
        batch = feed.batch
        batch += _pack_whole(b"M", flags, weight, self.key, env.ts, size, span, env.client_span_id)
        batch += raw
        feed.records += 1
        if feed.timer is None:  # (`TelemetryFeed.gathered`, inlined)
            feed.arm()
        elif env.ts >= feed.flush_due or len(batch) >= feed.handover_bytes:
            feed.flush_early()  # while messages pass, one of them hands over

    def _hand_over(self, env: Envelope) -> None:
        msg = env.msg
        kind = msg.kind
        feed = self._feed
        weight = feed.every  # how many calls a traced one stands for
        annotations = env.annotations
        verdict = bool(annotations) and self._security(env, annotations)
        if kind is REQUEST:
            if not env.server_span_id:  # shed in before_forward
                return
            weight = env.weight
        elif kind is RESPONSE or kind is ERROR:
            request = env.request
            if request is None:  # an answer to no request we know: on its own
                if feed.shed():
                    return
            elif not request.span_id:  # its request was shed
                lost = self._lost_samples
                key = (request.direction is C2S, id_key(request.id))
                if lost and key in lost:
                    feed.shed_lost(lost.pop(key))
                else:
                    feed.shed_follower(weight > 1)
                return
            else:  # its request was traced: the response goes too, whatever the buffer
                # holds (it is bounded by the traced requests in flight), standing for as
                # many calls as the request (the governor may have changed its mind since)
                weight = request.weight
        elif kind is BLANK:
            return
        elif msg.method == _CANCELLED and env.request is not None and env.request.span_id:
            # The first cancellation of a traced request always goes, standing for itself:
            # the request must not end as unanswered. (Bounded by the traced requests in
            # flight; any other cancellation, a repeat or a flood, is shed like any message.)
            weight = 1
        elif feed.shed():
            return
        if verdict:
            weight = 1  # traced because of its verdict, not as a sample
        # What the session learned travels before the next record that is handed over (a
        # shed message needs none of it, and is done with sooner).
        session = self.session
        if session.revision != self._revision:
            self._revision = session.revision
            feed.append(self.info_frame())
        traceparent = None
        if annotations:
            segment = annotations.get("segment")
            if isinstance(segment, tuple):
                trace_id, root_span_id = cast(tuple[int, int], segment)
                feed.append(Segment(self.key, env.ts, trace_id, root_span_id))
            header = annotations.get(HTTP_TRACEPARENT)
            traceparent = header if isinstance(header, str) else None
        raw = env.raw
        size = len(raw)
        s2c = env.direction is not C2S
        replied = env.reply is not None
        flags = s2c | (FLAG_REPLIED if replied else 0) | (FLAG_PROXY if env.proxy else 0)
        if size > feed.body_cap or traceparent is not None:
            # only its head goes over (or, with an HTTP traceparent, the whole message, which
            # the binary record has no room for), with the facts the worker needs
            summary = summarize(msg, not s2c, replied, env.proxy)
            if traceparent is not None:
                summary = summary._replace(http_traceparent=traceparent)
            feed.append(
                Msg(self.key, env.ts, int(s2c), size, raw[: feed.body_cap], summary,
                    env.server_span_id, env.client_span_id, weight, None)
            )  # fmt: skip
            return
        pending = feed.batch
        pending += _pack_whole(
            b"M", flags, weight, self.key, env.ts, size, env.server_span_id, env.client_span_id
        )
        pending += raw
        feed.records += 1
        feed.gathered(env.ts)

    def _security(self, env: Envelope, annotations: dict[str, object]) -> bool:
        """Hand over a policy's decision and the findings on ``env``, ahead of its record;
        whether there were any."""
        decision = annotations.get(DECISION)
        findings = annotations.get(FINDINGS)
        loaded = annotations.get(POLICY_LOADED)
        if decision is None and findings is None and loaded is None:
            return False
        found = tuple(cast(list[Finding], findings)) if findings is not None else ()
        feed = self._feed
        if feed.overflowing():
            feed.security_lost((decision is not None) + len(found) + (loaded is not None))
            return True
        if self.session.revision != self._revision:  # the worker may need the session's info
            self._revision = self.session.revision
            feed.append(self.info_frame())
        feed.append(
            Security(self.key, env.ts, env.server_span_id, cast(Decision | None, decision),
                     found, cast(dict[str, object] | None, loaded))
        )  # fmt: skip
        return True

    def info_frame(self) -> Info:
        session = self.session
        return Info(
            self.key, session.era, session.protocol_version, session.client_info,
            session.server_info, session.mcp_session_id,
        )  # fmt: skip

    def start_frame(self, *, resumed: bool = False) -> Start:
        session = self.session
        return Start(
            self.key, session.started_ns, session.id, session.transport, self.trace_id,
            self.root_span_id, self._upstream, resumed,
        )  # fmt: skip

    def _start(self, upstream: dict[str, object]) -> None:
        feed = self._feed
        feed.attach()
        session = self.session
        self._upstream = upstream
        feed.live[self.key] = self
        feed.append(self.start_frame())
        if session.revision or session.mcp_session_id is not None:
            self._revision = session.revision
            feed.append(self.info_frame())

    def session_started(self, session: Session, upstream: dict[str, object]) -> None:
        self._start(upstream)

    def upstream_stderr(self, session: Session, line: bytes, ts: int) -> None:
        feed = self._feed
        if feed.full():  # the governor spares them: they are few, and they explain crashes
            feed.shed_follower(False)
        else:
            feed.append(Stderr(self.key, ts, line[:STDERR_LINE_MAX]))

    def upstream_failed(self, session: Session, reason: str) -> None:
        self._start({})
        self._feed.append(Failed(self.key, time.time_ns(), reason))

    def upstream_restarted(self, session: Session, restart: Restart) -> None:
        self._upstream = restart.upstream  # (what a new worker's Start says)
        self._feed.append(
            Restarted(self.key, time.time_ns(), restart.number, restart.upstream,
                      restart.previous, restart.replayed, restart.failure, restart.usage)
        )  # fmt: skip

    def session_ended(self, session: Session) -> None:
        self._feed.live.pop(self.key, None)
        self._feed.append(
            End(self.key, session.ended_ns or time.time_ns(), session.exit_status,
                session.exit_reason, session.requests, session.errors,
                dict(session.method_counts), session.era, session.protocol_version,
                session.client_info, session.server_info,
                session.upstream_usage)
        )  # fmt: skip
