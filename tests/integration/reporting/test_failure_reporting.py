"""Failure reporting end to end: every failure kind recorded with its code, POSTed as FDXML to a real
receiver that parses it, nothing lost or repeated across a receiver outage and a gateway restart,
hostile text escaped, and the portal's and JSON API's access rules.

The gateway here has both sides: a simulated Responsys account (REST sends) and the simulated SMS
aggregator, so one deployment produces every kind of failure.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocols.xml import parse_untrusted
from gateway.reporting.poster import SIGNATURE_HEADER, signature
from gateway.store import NewFailure, open_store
from tests.support.servers import ServerThread, wait_until
from tests.support.sms import (
    APP_PASSWORD,
    APP_USER,
    LONELY_SHORT_CODE,
    LONG_CODE,
    SHORT_CODE,
    SmsDeployment,
)

HOSTILE = 'Carrier said "no" <b>&amp; bye</b>\nline two'
OTHER_USER, OTHER_PASSWORD = "other-app", "other-password"
ADMIN_TOKEN = "portal-admin-token-" + "0" * 32  # at least 32 bytes, as check-config requires
POST_SECRET = "fdxml-signing-secret-" + "0" * 32
REST_SEND = "/rest/api/v1.3/campaigns/welcome/email"


@dataclass(frozen=True)
class Entry:
    attributes: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.attributes[name]


class FdxmlReceiver:
    """The customer's server: takes POSTed FDXML, parses it with a real XML parser, answers `status`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.posts: list[list[Entry]] = []
        self.signatures: list[tuple[str | None, bytes]] = []
        self.attempts = 0
        self.status = 200
        self.server = ServerThread(Starlette(routes=[Route("/fdxml", self._take, methods=["POST"])]),
                                   lifespan="off")

    async def _take(self, request: Request) -> Response:
        body = await request.body()
        form = parse_qs(body.decode("ascii"), strict_parsing=True)
        with self._lock:
            self.attempts += 1
            if self.status != 200:
                return Response(status_code=self.status)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        (fdxml,) = form["FDXML"]
        root = parse_untrusted(fdxml.encode())
        assert root.tag == "FailData" and int(root.get("Entries", "-1")) == len(root)
        entries = [Entry(dict(element.attrib)) for element in root]
        assert all(e.attributes.keys() == {"ID", "Keyword", "FailCode", "Numbers", "SendID", "PrimaryFailDate",
                                           "PrimaryError", "SecondaryFailDate", "SecondaryError"} for e in entries)
        with self._lock:
            self.posts.append(entries)
            self.signatures.append((request.headers.get(SIGNATURE_HEADER), body))
        return Response(status_code=200)

    def entries(self) -> list[Entry]:
        with self._lock:
            return [entry for post in self.posts for entry in post]

    def by_code(self) -> dict[int, list[Entry]]:
        found: dict[int, list[Entry]] = {}
        for entry in self.entries():
            found.setdefault(int(entry["FailCode"]), []).append(entry)
        return found

    @property
    def url(self) -> str:
        return f"{self.server.url}/fdxml"


@pytest.fixture
def receiver() -> Any:
    receiver = FdxmlReceiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def reporting(make_sms: Callable[..., SmsDeployment], receiver: FdxmlReceiver) -> SmsDeployment:
    return make_sms(
        clients=[{"user_name": APP_USER, "password": APP_PASSWORD, "failure_post_url": receiver.url,
                  "failure_post_secret": POST_SECRET},
                 {"user_name": OTHER_USER, "password": OTHER_PASSWORD}],
        admin={"token": ADMIN_TOKEN},
        reporting={"post_interval": 0.2, "batch": 3},
        requests={"deadline": 1.0},
        outbox={"max_age": 1.5},
        callbacks={"allow_networks": ["127.0.0.0/8"], "timeout": 2.0, "max_age": 1.0},
    )


def rest_token(deployment: SmsDeployment, user: str = APP_USER, password: str = APP_PASSWORD) -> str:
    with httpx.Client(base_url=deployment.url, trust_env=False) as client:
        response = client.post("/rest/api/v1.3/auth/token", data={"user_name": user, "password": password,
                                                                  "auth_type": "password"})
    response.raise_for_status()
    token: str = response.json()["authToken"]
    return token


def rest_send(deployment: SmsDeployment, token: str, *, body: bytes, timeout: float = 15.0) -> httpx.Response:
    with httpx.Client(base_url=deployment.url, trust_env=False, timeout=timeout) as client:
        return client.post(REST_SEND, content=body, headers={"Authorization": token,
                                                             "Content-Type": "application/json"})


def email_body(address: str, *, list_name: bool = True) -> bytes:
    recipient: dict[str, Any] = {"emailAddress": address, "emailFormat": "HTML_FORMAT"}
    if list_name:
        recipient["listName"] = {"folderName": "F", "objectName": "L"}
    return json.dumps({"recipientData": [{"recipient": recipient, "optionalData": []}]}).encode()


def test_every_failure_kind_gets_its_code_and_reaches_the_customer_as_fdxml(
        reporting: SmsDeployment, receiver: FdxmlReceiver, tmp_path: Path) -> None:
    token = rest_token(reporting)
    # Request (1): JSON the gateway cannot read; an mtMessage that is not XML.
    assert rest_send(reporting, token, body=b"{not json").status_code == 400
    with reporting.http() as client:
        assert client.post("/sms/v1/messages", content=b"<mtMessage", headers={
            "Content-Type": "application/xml"}).status_code == 400
    # Not Sent Direct (2): the account rejects the send itself (no list named).
    assert rest_send(reporting, token, body=email_body("rejected@example.com", list_name=False)).status_code == 400
    # Not Sent Direct (2), retries exhausted: the account hangs and the send has no key (not resent).
    reporting.account.set_mode("hang")
    assert rest_send(reporting, token, body=email_body("hung@example.com")).status_code == 504
    # Queued (128): the account throttles until the queued send is older than outbox.max_age.
    reporting.account.set_mode("ok")
    reporting.account.throttle(1000, retry_after="1")
    assert rest_send(reporting, token, body=email_body("queued@example.com")).status_code == 202
    # Carrier Submission Direct (32) with hostile text, then the alternate goes out fine.
    reporting.aggregator.rule("refuse", source=SHORT_CODE, destination="+18475550001", description=HOSTILE,
                              error_code="1401")
    reporting.submit(destination="+18475550001", level="NONE")
    # Carrier (2048): a failed receipt on a short code without a long code: joined delivery data.
    reporting.aggregator.rule("fail", source=LONELY_SHORT_CODE, description="handset off", error_code="1002")
    reporting.submit(source=LONELY_SHORT_CODE, destination="+18475550002", level="NONE", text="Your PIN is 4242")
    # Redirect (64) and Redirect + Carrier (2112): alternates refused and failed by the carrier.
    reporting.aggregator.rule("refuse", destination="+18475550003", description="blocked")
    reporting.submit(destination="+18475550003", level="NONE")
    reporting.aggregator.rule("fail", destination="+18475550004", description="unreachable")
    reporting.submit(destination="+18475550004", level="NONE")
    # Post Out (8): the app's callback server refuses the callback.
    reporting.receiver.status = 400
    reporting.submit(destination="+18475550005", level="FINAL")

    expected = {1: 2, 2: 2, 8: 1, 32: 2, 64: 1, 128: 1, 2048: 2, 2112: 1}
    wait_until(lambda: {c: len(e) for c, e in receiver.by_code().items()} == expected, timeout=30,
               message=f"FDXML entries {expected}, have { {c: len(e) for c, e in receiver.by_code().items()} }")
    entries = receiver.entries()
    assert len({e["ID"] for e in entries}) == len(entries)  # each entry posted once
    assert all(len(post) <= 3 for post in receiver.posts)  # reporting.batch
    codes = receiver.by_code()
    # The hostile carrier text arrives exactly as the carrier wrote it, after a real XML parser.
    (refused,) = [e for e in codes[32] if e["Numbers"] == "+18475550001"]
    assert refused["PrimaryError"].startswith(HOSTILE)
    assert refused["Keyword"] == SHORT_CODE and refused["SendID"]
    # The failed receipt: delivery (secondary) data and the message snippet in PrimaryError.
    (receipt,) = [e for e in codes[2048] if e["Numbers"] == "+18475550002"]
    assert receipt["SecondaryError"].startswith("handset off") and receipt["SecondaryFailDate"]
    assert receipt["PrimaryError"] == 'Message: "Your PIN is 4242"'
    (alternate,) = codes[2112]
    assert alternate["Keyword"] == LONG_CODE and alternate["Numbers"] == "+18475550004"
    rejected, exhausted = sorted(codes[2], key=lambda e: int(e["ID"]))
    assert rejected["PrimaryError"].startswith("Not Sent: INVALID_PARAMETER") and rejected["Keyword"] == "welcome"
    assert rejected["Numbers"] == "rejected@example.com"
    assert exhausted["Numbers"] == "hung@example.com" and exhausted["PrimaryError"].startswith("Not Sent:")
    assert codes[128][0]["Numbers"] == "queued@example.com"
    assert codes[8][0]["PrimaryError"].startswith("Post Out:") and codes[8][0]["Numbers"] == "+18475550005"
    # What the customer's server got, kept for a person to read (tmp_path/fdxml-*.txt).
    for n, (_, body) in enumerate(receiver.signatures):
        (tmp_path / f"fdxml-{n}.txt").write_text(parse_qs(body.decode("ascii"))["FDXML"][0])
    # The metrics count the posts and the failed callback.
    with httpx.Client(base_url=reporting.url, trust_env=False) as client:
        metrics = client.get("/metrics").text
    assert re.search(r'^aftm_fdxml_posts_total\{result="ok"\} [1-9]', metrics, flags=re.MULTILINE), metrics
    assert re.search(r'^aftm_callback_posts_total\{result="failedpermanently"\} 1\.0$', metrics,
                     flags=re.MULTILINE), metrics
    # Every POST is signed over its exact body.
    for header, body in receiver.signatures:
        assert header is not None
        timestamp = int(header.split(",")[0].removeprefix("t="))
        assert header == signature(POST_SECRET, body, timestamp)


def test_no_entry_lost_or_repeated_across_a_receiver_outage_and_a_gateway_restart(
        reporting: SmsDeployment, receiver: FdxmlReceiver) -> None:
    receiver.status = 503
    token = rest_token(reporting)
    for _ in range(4):
        assert rest_send(reporting, token, body=b"{broken").status_code == 400
    wait_until(lambda: receiver.attempts >= 2, timeout=10, message="the poster to try the receiver twice")
    reporting.stop_gateway()
    reporting.start_gateway()
    token = rest_token(reporting)
    for _ in range(3):
        assert rest_send(reporting, token, body=b"{broken").status_code == 400
    receiver.status = 200
    wait_until(lambda: len(receiver.entries()) == 7, timeout=15, message="the backlog of 7 entries")
    ids = [e["ID"] for e in receiver.entries()]
    assert len(set(ids)) == 7 and [int(i) for i in ids] == sorted(int(i) for i in ids)  # oldest first, once
    # A delivery failure joined to an entry later: the entry is posted again, as an update.
    first = receiver.entries()[0]

    async def join_delivery_failure() -> None:
        store = await open_store(f"sqlite:///{reporting.store_path}")
        try:
            await store.add_delivery_failure(NewFailure(
                kind="delivery_failed", code=2048, client=APP_USER, send_id=first["SendID"], primary_at=0,
                secondary_at=1_700_000_000.0, secondary_error="late carrier report"), snippet='Message: "x"')
        finally:
            await store.close()

    assert first["SendID"]
    asyncio.run(join_delivery_failure())
    wait_until(lambda: len(receiver.entries()) == 8, timeout=15, message="the updated entry posted again")
    update = receiver.entries()[-1]
    assert update["ID"] == first["ID"] and update["SecondaryError"] == "late carrier report"
    assert int(update["FailCode"]) == 1 | 2048 and update["SecondaryFailDate"] == "11/14/2023 10:13:20 PM"


def test_the_portal_and_the_api_show_each_client_only_its_own_failures(reporting: SmsDeployment) -> None:
    token, other = rest_token(reporting), rest_token(reporting, OTHER_USER, OTHER_PASSWORD)
    assert rest_send(reporting, token, body=b"{mine").status_code == 400
    assert rest_send(reporting, other, body=b"{theirs").status_code == 400
    reporting.aggregator.rule("refuse", source=SHORT_CODE, destination="+18475550009", description=HOSTILE)
    reporting.submit(destination="+18475550009", level="NONE")

    def api(user: str, password: str, **params: str) -> httpx.Response:
        with httpx.Client(base_url=reporting.url, trust_env=False) as client:
            return client.get("/api/failures", params=params, auth=(user, password))

    wait_until(lambda: api(APP_USER, APP_PASSWORD).json()["total"] == 2, timeout=10, message="two entries")
    mine = api(APP_USER, APP_PASSWORD).json()["entries"]
    assert {e["client"] for e in mine} == {APP_USER}
    assert api(APP_USER, APP_PASSWORD, client=OTHER_USER).json()["total"] == 2  # asking for another's: own only
    assert [e["client"] for e in api(OTHER_USER, OTHER_PASSWORD).json()["entries"]] == [OTHER_USER]
    assert api("admin", ADMIN_TOKEN).json()["total"] == 3
    assert api("admin", ADMIN_TOKEN, client=OTHER_USER).json()["total"] == 1
    assert api(APP_USER, "wrong").status_code == 401
    assert [e["failCode"] for e in api(APP_USER, APP_PASSWORD, code="32").json()["entries"]] == [32]
    assert api(APP_USER, APP_PASSWORD, recipient="0009").json()["total"] == 1
    assert api(APP_USER, APP_PASSWORD, **{"from": "yesterday"}).status_code == 400

    with httpx.Client(base_url=reporting.url, trust_env=False, follow_redirects=False) as browser:
        assert browser.get("/portal/failures").headers["location"].startswith("/portal/login")
        refused = browser.post("/portal/login", data={"user_name": APP_USER, "password": "nope"})
        assert refused.status_code == 401 and "wrong password" in refused.text
        logged_in = browser.post("/portal/login", data={"user_name": APP_USER, "password": APP_PASSWORD})
        assert logged_in.status_code == 303 and "httponly" in logged_in.headers["set-cookie"].lower()
        page = browser.get("/portal/failures")
        assert page.status_code == 200 and "2 failures" in page.text
        assert "<b>&amp; bye</b>" not in page.text and "&lt;b&gt;&amp;amp; bye&lt;/b&gt;" in page.text
        assert OTHER_USER not in page.text
        theirs = api("admin", ADMIN_TOKEN, client=OTHER_USER).json()["entries"][0]["id"]
        assert browser.get(f"/portal/failures/{theirs}").status_code == 404  # not another client's entry
        csv_text = browser.get("/portal/failures.csv").text
        assert csv_text.splitlines()[0].startswith("ID,Client,Account,Keyword,FailCode")
        assert len([line for line in csv_text.splitlines() if line.startswith(tuple("0123456789"))]) == 2
        assert browser.post("/portal/logout").status_code == 303
        browser.cookies.clear()
        assert browser.get("/portal/failures").status_code == 303


def test_an_fdxml_post_url_at_a_refused_address_is_never_connected_to(
        make_sms: Callable[..., SmsDeployment], receiver: FdxmlReceiver) -> None:
    deployment = make_sms(  # the customer's URL names loopback, which the operator's list does not allow
        clients=[{"user_name": APP_USER, "password": APP_PASSWORD, "failure_post_url": receiver.url}],
        reporting={"post_interval": 0.2}, callbacks={"allow_networks": []})
    assert rest_send(deployment, rest_token(deployment), body=b"{broken").status_code == 400

    def refused_posts() -> int:
        with httpx.Client(base_url=deployment.url, trust_env=False) as client:
            found = re.search(r'^aftm_fdxml_posts_total\{result="error"\} (\d+)', client.get("/metrics").text,
                              flags=re.MULTILINE)
        return int(found.group(1)) if found else 0

    wait_until(lambda: refused_posts() >= 2, timeout=10, message="the poster refused twice")
    assert receiver.attempts == 0
