"""Every telemetry name helmet-otel emits, in one place.

Semantic-convention names (MCP, GenAI, JSON-RPC, network) are used wherever one exists;
everything else is ``helmet.*``. Dashboards, the local store and the tests import these
constants, so a rename here is a rename everywhere (and the name-contract test notices).
"""

from __future__ import annotations

from typing import Final

SCOPE_NAME: Final = "helmet_otel"

# --- MCP / GenAI / JSON-RPC / network semantic conventions --------------------------------
MCP_METHOD_NAME: Final = "mcp.method.name"
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_RESOURCE_URI: Final = "mcp.resource.uri"
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
JSONRPC_PROTOCOL_VERSION: Final = "jsonrpc.protocol.version"
RPC_RESPONSE_STATUS_CODE: Final = "rpc.response.status_code"
ERROR_TYPE: Final = "error.type"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
NETWORK_TRANSPORT: Final = "network.transport"
NETWORK_PROTOCOL_NAME: Final = "network.protocol.name"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
CLIENT_ADDRESS: Final = "client.address"
CLIENT_PORT: Final = "client.port"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
SERVICE_NAME: Final = "service.name"
CPU_MODE: Final = "cpu.mode"  # on process.cpu.time: user | system

OPERATION_EXECUTE_TOOL: Final = "execute_tool"
ERROR_TYPE_TOOL_ERROR: Final = "tool_error"
ERROR_TYPE_NO_RESPONSE: Final = "no_response"  # the session ended before the call was answered

# --- helmet's own attributes ----------------------------------------------------------------
HELMET_SESSION_ID: Final = "helmet.session.id"
HELMET_DIRECTION: Final = "helmet.direction"
HELMET_MESSAGE_KIND: Final = "helmet.message.kind"  # request | response | notification | invalid
HELMET_MESSAGE_SIZE: Final = "helmet.message.size"  # bytes on the wire
HELMET_LATENCY_MS: Final = "helmet.latency_ms"  # on responses
HELMET_ERA: Final = "helmet.era"  # legacy | modern | unknown
HELMET_TRANSPORT: Final = "helmet.transport"  # stdio | streamable-http
HELMET_SERVER_NAME: Final = "helmet.server.name"
HELMET_SERVER_COMMAND: Final = "helmet.server.command"
HELMET_SERVER_URL: Final = "helmet.server.url"  # an HTTP upstream (no credentials, no query)
HELMET_SERVER_PID: Final = "helmet.server.pid"
# The wrapped server's process tree (helmet.performance and helmet.session_end of its session):
# CPU seconds it used so far, and the most resident memory it held at a sample, in bytes
HELMET_SERVER_CPU_TIME: Final = "helmet.server.cpu_time"
HELMET_SERVER_MEMORY_PEAK: Final = "helmet.server.memory.peak"
HELMET_SERVER_VERSION: Final = "helmet.server.version"  # serverInfo.version
HELMET_SERVER_INFO_NAME: Final = "helmet.server.info.name"  # serverInfo.name
HELMET_CLIENT_NAME: Final = "helmet.client.name"  # clientInfo.name
HELMET_CLIENT_VERSION: Final = "helmet.client.version"
HELMET_EXIT_STATUS: Final = "helmet.exit.status"
HELMET_EXIT_REASON: Final = "helmet.exit.reason"
# On the helmet.initialization of a server that replaced a crashed one (--restart on-failure):
# true, and how many restarts the session had so far (also on its helmet.session_end)
HELMET_RESTART: Final = "helmet.restart"
HELMET_RESTART_COUNT: Final = "helmet.restart.count"
HELMET_SESSION_DURATION_MS: Final = "helmet.session.duration_ms"
HELMET_SESSION_REQUESTS: Final = "helmet.session.requests"
HELMET_SESSION_ERRORS: Final = "helmet.session.errors"
HELMET_TRACE_SEGMENT: Final = "helmet.trace.segment"  # 0, 1, 2... for rolled-over traces
# While the relay sheds calls to keep up (see docs/design.md), each traced one stands for this
# many; set only when above 1. Metrics already count it that many times.
HELMET_SAMPLE_WEIGHT: Final = "helmet.sample.weight"
HELMET_ERROR_CODE: Final = "helmet.error.code"
HELMET_ERROR_MESSAGE: Final = "helmet.error.message"
HELMET_LOG_LEVEL: Final = "helmet.log.level"  # the MCP notifications/message level
HELMET_POLICY_ID: Final = "helmet.policy.id"
HELMET_POLICY_ACTION: Final = "helmet.policy.action"  # allow | deny | log
HELMET_POLICY_MODE: Final = "helmet.policy.mode"  # enforce | shadow (decided, not enforced)
# security findings (helmet.security records, helmet.security.events)
HELMET_SECURITY_TYPE: Final = "helmet.security.type"  # policy_block | tool_drift | new_tool | ...
HELMET_SECURITY_SEVERITY: Final = "helmet.security.severity"  # low | medium | high
HELMET_SECURITY_RULE: Final = "helmet.security.rule"  # the rule or detector id
HELMET_SECURITY_REASON: Final = "helmet.security.reason"  # auth_failure: why it was refused
HELMET_TELEMETRY_REASON: Final = "helmet.telemetry.reason"  # why something was dropped
HELMET_BODY_TRUNCATED: Final = "helmet.body.truncated"
# "proxy" on the records of a response the proxy wrote itself (a policy block, an "upstream
# gone" error, a start-failure answer), not the server
HELMET_ORIGIN: Final = "helmet.origin"
ORIGIN_PROXY: Final = "proxy"

DIRECTION_C2S: Final = "client->server"
DIRECTION_S2C: Final = "server->client"

# --- log record event names (LogRecord.event_name) -----------------------------------------
EVENT_SESSION_START: Final = "helmet.session_start"
EVENT_SESSION_END: Final = "helmet.session_end"
EVENT_PROXY_CLOSE: Final = "helmet.proxy_close"
EVENT_REQUEST: Final = "helmet.request"
EVENT_RESPONSE: Final = "helmet.response"
EVENT_NOTIFICATION: Final = "helmet.notification"
EVENT_ERROR: Final = "helmet.error"
EVENT_INITIALIZATION: Final = "helmet.initialization"
EVENT_CONFIGURATION: Final = "helmet.configuration"
EVENT_PERFORMANCE: Final = "helmet.performance"
EVENT_SERVER_STDERR: Final = "helmet.server_stderr"
EVENT_SECURITY: Final = "helmet.security"  # a security finding (see HELMET_SECURITY_TYPE)

ALL_EVENTS: Final = (
    EVENT_SESSION_START,
    EVENT_SESSION_END,
    EVENT_PROXY_CLOSE,
    EVENT_REQUEST,
    EVENT_RESPONSE,
    EVENT_NOTIFICATION,
    EVENT_ERROR,
    EVENT_INITIALIZATION,
    EVENT_CONFIGURATION,
    EVENT_PERFORMANCE,
    EVENT_SERVER_STDERR,
    EVENT_SECURITY,
)

# --- span names ----------------------------------------------------------------------------
SPAN_SESSION: Final = "session"

# --- metrics -------------------------------------------------------------------------------
METRIC_SERVER_OPERATION_DURATION: Final = "mcp.server.operation.duration"
METRIC_CLIENT_OPERATION_DURATION: Final = "mcp.client.operation.duration"
METRIC_SERVER_SESSION_DURATION: Final = "mcp.server.session.duration"
METRIC_SESSIONS_ACTIVE: Final = "helmet.sessions.active"  # UpDownCounter, {session}
METRIC_MESSAGES: Final = "helmet.messages"  # Counter, {message}
METRIC_MESSAGE_SIZE: Final = "helmet.message.size"  # Histogram, By
METRIC_ERRORS: Final = "helmet.errors"  # Counter, {error}
METRIC_POLICY_DECISIONS: Final = "helmet.policy.decisions"  # Counter, {decision}
METRIC_TELEMETRY_DROPPED: Final = "helmet.telemetry.dropped"  # Counter, {record}
METRIC_SECURITY_EVENTS: Final = "helmet.security.events"  # Counter, {event}
# The wrapped server's process tree (OS process semantic conventions), summed over the
# proxy's sessions: every --metrics-interval from /proc
METRIC_PROCESS_CPU_TIME: Final = "process.cpu.time"  # Counter, s, by cpu.mode
METRIC_PROCESS_MEMORY_USAGE: Final = "process.memory.usage"  # UpDownCounter, By (resident)
METRIC_PROCESS_THREAD_COUNT: Final = "process.thread.count"  # UpDownCounter, {thread}
# (semconv renamed process.open_file_descriptor.count to this)
METRIC_PROCESS_FD_COUNT: Final = "process.unix.file_descriptor.count"  # UpDownCounter

DURATION_BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
SIZE_BUCKETS: Final = (
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
HELMET_PROXY_PID: Final = "helmet.proxy.pid"  # the proxy process (sessions --active checks it)
HELMET_PROXY_HOST: Final = "helmet.proxy.host"  # hostname of the proxy process

# --- session end reasons -------------------------------------------------------------------
# The worker ends a session with this reason when the proxy went away (SIGKILL, crash) without
# ending it; the store shows such a session as "lost", not "ended".
LOST_EXIT_REASON: Final = "proxy terminated without closing"
# A non-zero exit status after one of these is the client stopping its server (closing stdin,
# then SIGTERM; or a signal to the proxy), a normal end, not a failure.
NORMAL_END_REASONS: Final = ("client closed", "proxy received")
