"""The simulated SMS aggregator on its own: the MT API, rules, receipts, counts, and `aftm-gateway simulate --sms`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from gateway_tools.simulator.sms import SimulatedSmsAggregator
from tests.support.servers import answers, free_port, wait_until
from tests.support.sms import CallbackReceiver

AUTH = ("api_sms", "sim-password")


def mt(source: str, destination: str, *, callback: str | None = None, submitter: str | None = None) -> bytes:
    root = etree.Element("mtMessage", **({"submitterMessageId": submitter} if submitter else {}))
    etree.SubElement(root, "destination", address=destination, type="MDN")
    etree.SubElement(root, "source", address=source, type="SC")
    etree.SubElement(root, "text").text = "hello"
    if callback:
        etree.SubElement(root, "receiptOption", callbackUrl=callback).text = "ALL"
    return bytes(etree.tostring(root))


@pytest.fixture
def aggregator() -> Iterator[SimulatedSmsAggregator]:
    with SimulatedSmsAggregator(user_name=AUTH[0], password=AUTH[1]) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    with receiver.server:
        yield receiver


def test_rules_pick_by_destination_and_sender_and_receipts_follow(aggregator: SimulatedSmsAggregator,
                                                                  receiver: CallbackReceiver) -> None:
    aggregator.rule("fail", source="98765", after_ms=50, error_code="77", description="no route")
    aggregator.rule("refuse", source="98765", destination="+15550000001", description="blocked", error_code="99")
    with httpx.Client(base_url=aggregator.url, auth=AUTH, trust_env=False) as client:
        refused = client.post("/mt", content=mt("98765", "+15550000001", callback=receiver.url()))
        failed = client.post("/mt", content=mt("98765", "+15550000002", callback=receiver.url(), submitter="s-1"))
        again = client.post("/mt", content=mt("98765", "+15550000002", callback=receiver.url(), submitter="s-1"))
        delivered = client.post("/mt", content=mt("+13125550100", "+15550000002", callback=receiver.url()))
        unauthorized = client.post("/mt", content=mt("98765", "+1"), auth=("api_sms", "nope"))
        probe = client.get("/mt")
    assert refused.status_code == 400
    refusal = etree.fromstring(refused.content)
    assert (refusal.findtext("type"), refusal.find("status").get("isError"), refusal.findtext("status/errorCode")) == (
        "Carrier", "true", "99")
    failed_id = etree.fromstring(failed.content).get("messageId")
    assert failed.status_code == 200 and failed_id
    assert etree.fromstring(again.content).get("messageId") == failed_id  # de-duplicated
    assert delivered.status_code == 200 and unauthorized.status_code == 401 and probe.status_code == 405

    posts = receiver.wait_for(2)
    by_id = {p.xml.get("messageId"): p.xml for p in posts}
    assert by_id[failed_id].find("status").get("isError") == "true"
    assert by_id[failed_id].findtext("status/description") == "no route"
    assert aggregator.counts() == {"by_destination": {"+15550000002": 2},
                                   "by_sender": {"98765": 1, "+13125550100": 1}}
    wait_until(lambda: len(aggregator.receipts()) == 2, message="the receipts to be recorded")
    assert all(r.status_code == 200 for r in aggregator.receipts())


def test_the_control_api_sets_rules_and_counts(aggregator: SimulatedSmsAggregator) -> None:
    with httpx.Client(base_url=aggregator.control_url, trust_env=False) as control:
        assert control.post("/sms/rules", json={"action": "refuse", "destination": "+15550000009"}).status_code == 200
        assert control.post("/sms/rules", json={"action": "explode"}).status_code == 400
        assert control.post("/mode", json={"mode": "http503"}).json() == {"mode": "http503"}
        with httpx.Client(base_url=aggregator.url, auth=AUTH, trust_env=False) as client:
            assert client.post("/mt", content=mt("98765", "+15550000008")).status_code == 503
            control.post("/mode", json={"mode": "ok"})
            assert client.post("/mt", content=mt("98765", "+15550000009")).status_code == 400
            assert client.post("/mt", content=mt("98765", "+15550000008")).status_code == 200
        assert control.get("/sms/counts").json() == {"by_destination": {"+15550000008": 1},
                                                     "by_sender": {"98765": 1}}
        assert len(control.get("/sms/messages").json()) == 2
        control.post("/reset")
        assert control.get("/sms/messages").json() == []


def test_simulate_sms_command_serves_the_aggregator() -> None:
    port, control_port = free_port(), free_port()
    env = {**os.environ, "AFTM_SIM_PASSWORD": "cli-password"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "simulate", "--sms", "--name", "sms", "--port", str(port),
         "--control-port", str(control_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{control_port}/sms/counts"), timeout=30,
                   message="the simulator's control API")
        answer = httpx.post(f"http://127.0.0.1:{port}/mt", content=mt("98765", "+15550000001"),
                            auth=("api_sms", "cli-password"), trust_env=False)
        assert answer.status_code == 200 and etree.fromstring(answer.content).get("messageId")
        counts = httpx.get(f"http://127.0.0.1:{control_port}/sms/counts", trust_env=False).json()
        assert counts["by_destination"] == {"+15550000001": 1}
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
