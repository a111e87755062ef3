"""Failures of app calls, recorded for the app to see (the failure portal, FDXML posts) in the background.

The app's answer never waits for its failure entry: `report` starts the write and returns; `close()`
waits for the writes still running. A REST send's entry names its campaign or event and recipients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from gateway.core.dialects.rest import send_summary
from gateway.core.loop import Call, Result
from gateway.protocols import responsys_rest as rest
from gateway.reporting.codes import FailureKind
from gateway.reporting.recorder import FailureReporter
from policies.outcome import Kind


def summary(protocol: str, path: str, body: bytes) -> tuple[str, str]:
    """A failure entry's keyword (the REST campaign or event) and numbers (its recipients, comma-joined)."""
    return send_summary(path, body) if protocol == "rest" else ("", "")


class FailureReports:
    """Records failures of app calls without making the caller wait."""

    def __init__(self, *, recorder: FailureReporter) -> None:
        self.recorder = recorder
        self._background: set[asyncio.Task[None]] = set()

    def report(self, kind: FailureKind, *, client: str, error: str, send_id: str, path: str = "",
               body: bytes = b"", protocol: str = "rest", account: str | None = None,
               correlation_id: str = "") -> None:
        """Record a failure of an app call in the background (a REST send's campaign and recipients too).

        `send_id` is the gateway's request id; `correlation_id` the app's X-Request-Id, a label only.
        """
        keyword, numbers = summary(protocol, path, body)
        self._in_background(self.recorder.record(kind, client=client, error=error, account=account, keyword=keyword,
                                                 numbers=numbers, send_id=send_id, correlation_id=correlation_id))

    def report_send(self, call: Call, result: Result) -> None:
        """Record a send that failed for the app to see: not sent, rejected, or rejected for some recipients."""
        outcome = result.outcome
        if result.status == "failed":
            kind, error = FailureKind.RETRIES_EXHAUSTED, (
                f"Not Sent: {outcome.detail if outcome is not None and outcome.detail else 'no account took it'}")
        elif outcome is not None and outcome.kind is Kind.CLIENT_ERROR and result.response is not None:
            kind, error = FailureKind.UPSTREAM_REJECTED, f"Not Sent: {rest.error_text(result.response.content)}"
        elif (call.protocol == "rest" and result.response is not None
              and rest.may_reject_recipients(result.response.content)):
            self._report_rejected_recipients(call, result)
            return
        else:
            return
        self.report(kind, client=call.client, error=error, account=result.account, send_id=call.request_id,
                    correlation_id=call.correlation_id, path=call.path, body=call.body, protocol=call.protocol)

    def _report_rejected_recipients(self, call: Call, result: Result) -> None:
        """A REST send answered 200 may still reject some recipients (`"success": false` per recipient)."""
        assert result.response is not None
        keyword, _ = summary(call.protocol, call.path, b"")
        for recipient, error in rest.rejected_recipients(result.response.content):
            self._in_background(self.recorder.record(
                FailureKind.UPSTREAM_REJECTED_RECIPIENT, client=call.client, error=f"Not Sent: {error}",
                account=result.account, keyword=keyword, numbers=recipient, send_id=call.request_id,
                correlation_id=call.correlation_id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="record-failure")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Wait for the failure records still being written."""
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
