"""Severity for MCP log levels and for the server's stderr lines."""

from __future__ import annotations

import re

from opentelemetry._logs import SeverityNumber

# MCP notifications/message levels (RFC 5424) -> OTel severity (syslog column of the data model).
MCP_LEVELS = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "notice": SeverityNumber.INFO2,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "critical": SeverityNumber.ERROR2,
    "alert": SeverityNumber.ERROR3,
    "emergency": SeverityNumber.FATAL,
}

_LEVEL_WORD = re.compile(
    r"""^\W{0,3}(?:\S+\s+){0,3}?\W?(?P<level>trace|debug|info|notice|warn|warning|error|err|fatal|critical)\b"""
    r"""|\blevel["']?\s*[=:]\s*["']?(?P<kv>trace|debug|info|notice|warn|warning|error|fatal|critical)""",
    re.IGNORECASE,
)
_WORD_SEVERITY = {
    "trace": SeverityNumber.TRACE,
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "notice": SeverityNumber.INFO2,
    "warn": SeverityNumber.WARN,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "err": SeverityNumber.ERROR,
    "fatal": SeverityNumber.FATAL,
    "critical": SeverityNumber.ERROR2,
}


def mcp_level_severity(level: str) -> SeverityNumber:
    return MCP_LEVELS.get(level.lower(), SeverityNumber.INFO)


def stderr_severity(line: str) -> SeverityNumber:
    """WARN unless the line announces its own level in its first words or as ``level=...``."""
    match = _LEVEL_WORD.search(line[:200])
    if match is None:
        return SeverityNumber.WARN
    word = (match.group("level") or match.group("kv")).lower()
    return _WORD_SEVERITY.get(word, SeverityNumber.WARN)


def has_level(line: str) -> bool:
    """Whether the line announces its own level (a log line of its own)."""
    return _LEVEL_WORD.search(line[:200]) is not None
