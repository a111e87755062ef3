"""The SMS dialect: one pass of the forward loop over the aggregators, read as what it means for a message.

The pass runs through the real loop (`sms_loop`) with an upstream that answers from a script, so the
classification is tested where it happens: what an aggregator answered, or how it failed, becomes
Accepted, Refused or NotSent (with the pause the outbox should take).
"""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.config import RateLimit, Secret, SmsUpstream
from gateway.core.dialects.sms import (
    RATE_WAIT_MAX,
    Accepted,
    NotSent,
    Refused,
    SmsDialect,
    SmsSender,
    send_result,
    sms_loop,
)
from gateway.core.loop import Result
from gateway.errors import TLSRefused, UpstreamAmbiguous, UpstreamUnreachable
from gateway.store import Store
from gateway.upstreams.cluster import Cluster
from policies.failover import FailoverSettings
from policies.outcome import Failure, Outcome
from tests.support.clock import FakeClock
from tests.unit.core.fakes import FakeUpstream

DOCUMENT = b'<mtMessage submitterMessageId="m-1"/>'
CARRIER_REFUSAL = (b'<mtMessageResponse><type>Carrier</type><status isError="true"><description>blocked'
                   b"</description><errorCode>1401</errorCode></status></mtMessageResponse>")


def _no_store() -> Store:
    raise AssertionError("a send never touches the store")


def _upstream(name: str, *, per_minute: int = 0) -> SmsUpstream:
    return SmsUpstream(name=name, url=f"https://{name}.test/", user_name=f"user-{name}", password=Secret("pw"),
                       rate_limit=RateLimit(per_minute=per_minute, burst=1))


class Pass:
    """Two aggregators, `sms1` preferred, behind the SMS sends' forward loop."""

    def __init__(self, *, per_minute: int = 0) -> None:
        self.upstream = FakeUpstream(FakeClock())
        self.cluster = Cluster(members=[_upstream("sms1", per_minute=per_minute), _upstream("sms2")],
                               settings=FailoverSettings(), upstream=self.upstream,  # type: ignore[arg-type]
                               probe_url=lambda u: u.url, store=_no_store, replica="r", shared_key="sms-failover")
        self.sender = SmsSender(loop=sms_loop(self.cluster, self.upstream))  # type: ignore[arg-type]

    async def send(self) -> Accepted | Refused | NotSent:
        return await self.sender.send(DOCUMENT, request_id="sms-m-1", client="app")


async def test_an_accepted_message_names_the_upstream_and_its_message_id() -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [httpx.Response(200, content=b'<mtMessageResponse messageId="UP-7"/>')]
    assert await rig.send() == Accepted("sms1", "UP-7")
    assert rig.upstream.tried == ["sms1"]


async def test_the_request_carries_the_document_with_the_upstreams_own_basic_credentials() -> None:
    rig = Pass()
    await rig.send()
    request = rig.upstream.sent[0].request
    assert (request.method, str(request.url)) == ("POST", "https://sms1.test/mt")
    assert request.content == DOCUMENT
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"user-sms1:pw").decode()
    assert request.headers["content-type"] == "application/xml; charset=utf-8"


async def test_a_carrier_refusal_is_final_and_says_so() -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [httpx.Response(400, content=CARRIER_REFUSAL)]
    result = await rig.send()
    assert isinstance(result, Refused) and (result.upstream, result.status_code) == ("sms1", 400)
    assert result.by_carrier and result.answer is not None and result.answer.error_code == "1401"
    assert rig.upstream.tried == ["sms1"]


async def test_an_unreadable_refusal_is_a_rejection_not_a_carrier_failure() -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [httpx.Response(400, content=b"no")]
    result = await rig.send()
    assert isinstance(result, Refused) and result.answer is None and not result.by_carrier


@pytest.mark.parametrize("failure", [UpstreamUnreachable("refused"), TLSRefused("below TLS 1.2"), 401, 403, 502,
                                     503, 504], ids=["connect", "tls", "401", "403", "502", "503", "504"])
async def test_a_failure_that_sent_nothing_moves_to_the_next_upstream_in_the_same_pass(failure: object) -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [failure]  # type: ignore[list-item]
    rig.upstream.script["sms2"] = [httpx.Response(200, content=b'<mtMessageResponse messageId="UP-2"/>')]
    assert await rig.send() == Accepted("sms2", "UP-2")
    assert rig.upstream.tried == ["sms1", "sms2"]


@pytest.mark.parametrize("failure", [UpstreamAmbiguous("read timeout"), 500], ids=["read-timeout", "500"])
async def test_an_ambiguous_failure_ends_the_pass_for_the_outbox_to_send_again(failure: object) -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [failure]  # type: ignore[list-item]
    result = await rig.send()
    assert isinstance(result, NotSent) and result.retry_after is None
    assert result.reason.startswith("sms1: ") and "(ambiguous: the message may have gone out" in result.reason
    assert rig.upstream.tried == ["sms1"]  # never a second upstream: that could be a second SMS


async def test_throttling_ends_the_pass_with_the_upstreams_pause_and_no_wait_here() -> None:
    rig = Pass()
    rig.upstream.script["sms1"] = [(429, {"retry-after": "7"})]
    result = await rig.send()
    assert result == NotSent("sms1: throttled", retry_after=7.0)
    assert rig.upstream.tried == ["sms1"]


async def test_every_upstream_failing_is_not_sent_with_the_last_reason() -> None:
    rig = Pass()
    rig.upstream.script = {"sms1": [503], "sms2": [UpstreamUnreachable("connection refused")]}
    result = await rig.send()
    assert isinstance(result, NotSent) and result.retry_after is None
    assert result.reason == "sms2: connection refused"
    assert rig.upstream.tried == ["sms1", "sms2"]  # one pass: the outbox's backoff decides the next


async def test_an_upstream_over_its_rate_limit_asks_the_outbox_to_wait() -> None:
    rig = Pass(per_minute=1)  # one token a minute: the second send would wait far past RATE_WAIT_MAX
    assert isinstance(await rig.send(), Accepted)
    assert await rig.send() == NotSent("sms1: over its rate limit", retry_after=RATE_WAIT_MAX)
    assert rig.upstream.tried == ["sms1"]


def test_the_dialect_classifies_the_aggregators_answers() -> None:
    dialect = SmsDialect()
    assert dialect.classify(httpx.Response(200), None) == Outcome.ok()
    assert dialect.classify(httpx.Response(429), 3.0).retry_after == 3.0
    assert dialect.classify(httpx.Response(401), None).failure is Failure.UNAVAILABLE
    assert dialect.classify(httpx.Response(500), None).failure is Failure.SERVER_ERROR
    assert dialect.classify(httpx.Response(400, content=CARRIER_REFUSAL), None).detail == "carrier refused: blocked"


def test_a_pass_that_tried_nothing_is_not_sent() -> None:
    assert send_result(Result("failed", request_id="x")) == NotSent("no SMS upstream is configured")
