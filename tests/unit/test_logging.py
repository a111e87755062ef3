"""JSON log lines carry the current trace and span ids and never a secret."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry.logs import JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "aftm.test", "levelname": "INFO", "msg": message, "args": ()})
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_line_inside_a_span_names_its_trace_and_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter().format(record("inside")))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    outside = json.loads(JsonFormatter().format(record("outside")))
    assert "trace_id" not in outside and "span_id" not in outside


def test_secrets_are_redacted_by_key_and_in_free_text() -> None:
    line = JsonFormatter().format(record('login failed: password="hunter2" authToken=abc.def', session_id="s3cr3t",
                                         account="primary"))
    assert "hunter2" not in line and "abc.def" not in line and "s3cr3t" not in line
    assert json.loads(line)["account"] == "primary"
