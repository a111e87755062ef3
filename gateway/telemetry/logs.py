"""Logging setup: one JSON object per line, with the current trace and span ids, secrets redacted.

Log calls pass facts through `extra=` (request_id, account, outcome, reason); nothing here knows what a
token looks like, so redaction is by key name and by known secret shapes in free text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_KEYS = re.compile(r"pass(word)?|token|secret|session_?id|authorization|cookie|credential", re.I)
_SECRET_TEXT = re.compile(
    r"(?i)(password|authToken|sessionId|authorization|token)(\"?\s*[:=]\s*\"?|>)([^\s\"&<,}]+)"
)


def redact(text: str) -> str:
    """Mask values that follow secret-looking names in free text."""
    return _SECRET_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            entry[key] = "***" if _SECRET_KEYS.search(key) else _plain(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {redact(str(record.exc_info[1]))}"
        return json.dumps(entry, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


# Libraries whose DEBUG (or INFO) lines carry what the gateway must never log: aiosqlite prints every
# statement with its parameters (receipt tokens, message texts, outbox bodies), asyncpg and the
# HTTP stacks print URLs (receipt URLs end in their token), headers (Authorization) and bodies. They
# stay at WARNING whatever the gateway's level; the gateway logs its own facts instead.
QUIET_LOGGERS = ("aiosqlite", "asyncpg", "httpx", "httpcore", "hpack", "h2", "h11", "aiohttp", "urllib3",
                 "multipart", "python_multipart", "dns")


def configure_logging(*, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:  # children (aiohttp.client, httpcore.http11, ...) inherit the level
        logging.getLogger(name).setLevel(logging.WARNING)
