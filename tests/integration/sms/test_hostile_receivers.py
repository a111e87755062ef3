"""Callback receivers the gateway cannot trust: slow ones keep to their own lane, inward ones are refused.

The receivers here are real listeners on loopback; the gateway is the whole SMS deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.store import OutboxItem, open_store
from tests.integration.gateway.conftest import EMAIL_PATH, email_body
from tests.integration.sms.test_api import assert_nothing_sent, assert_xml_error, post
from tests.support.servers import bind_socket, wait_until
from tests.support.sms import APP_USER, SmsDeployment, mt_message


class SilentReceiver:
    """Accepts connections and never answers: each callback POST to it hangs until the gateway gives up."""

    def __init__(self) -> None:
        self.sock = bind_socket("127.0.0.1", 0)
        self.port: int = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-receiver", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._held.append(connection)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def close(self) -> None:
        """Hang up on every held callback (the gateway retries them later) and stop listening."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self._thread.join(timeout=5)
        self.sock.close()
        with self._lock:
            for connection in self._held:
                connection.close()
            self._held.clear()


@pytest.fixture
def silent_receiver() -> Iterator[SilentReceiver]:
    receiver = SilentReceiver()
    yield receiver
    receiver.close()


def enqueue_rest_send(sms: SmsDeployment, recipient: str) -> None:
    """Queue a REST send straight into the gateway's store, as a send the accounts could not take earlier."""

    async def enqueue() -> None:
        store = await open_store(f"sqlite:///{sms.store_path}")
        try:
            await store.enqueue(OutboxItem.new(
                protocol="rest", method="POST", path=EMAIL_PATH, headers=[("content-type", "application/json")],
                body=email_body(recipient), client=APP_USER, now=time.time(), max_age=300.0))
        finally:
            await store.close()

    asyncio.run(enqueue())


def test_slow_callback_receivers_do_not_delay_a_queued_send(make_sms: Callable[..., SmsDeployment],
                                                           silent_receiver: SilentReceiver) -> None:
    sms = make_sms(callbacks={"timeout": 30.0})
    for n in range(8):  # the outbox's 8 send slots, were callbacks to share them
        sms.submit(level="ALL", submitter=f"slow-{n}",
                   callback_url=f"http://127.0.0.1:{silent_receiver.port}/callback")
    wait_until(lambda: silent_receiver.held >= 8, timeout=15, message="8 callbacks hanging on their receiver")

    enqueue_rest_send(sms, "lane@example.com")
    started = time.monotonic()
    wait_until(lambda: any("lane@example.com" in d.recipient for d in sms.account.deliveries()), timeout=15,
               message="the queued send delivered while callbacks hang")
    assert time.monotonic() - started < 10  # the worker's poll, not the 30 s the callbacks may take
    assert silent_receiver.held >= 8  # the callbacks were still hanging all along


@pytest.mark.parametrize("address", ["::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "::a9fe:a9fe"])
def test_a_callback_url_naming_an_ipv6_translation_of_an_inward_address_is_refused(
        make_sms: Callable[..., SmsDeployment], address: str) -> None:
    sms = make_sms()  # loopback IPv4 is allowed here: its IPv6 translations still are not
    description = assert_xml_error(post(sms, mt_message(callback_url=f"http://[{address}]:8080/cb")), 400)
    assert "refused address" in description
    assert_nothing_sent(sms)


def test_a_callback_name_answered_with_a_translated_inward_aaaa_is_refused_and_nothing_connected(
        make_sms: Callable[..., SmsDeployment]) -> None:
    sms = make_sms()
    sms.dns.set("inward6.test", ["64:ff9b::7f00:1"])  # NAT64 of 127.0.0.1, where the receiver listens
    url = f"http://inward6.test:{sms.receiver.server.port}/callback"
    message_id = sms.submit(callback_url=url, level="ALL")

    def post_out() -> bool:
        return any(h.get("errorCode") == "post-out" for h in sms.status(message_id)["history"])

    wait_until(post_out, timeout=15, message="the refused callback recorded as post-out")
    [failure] = [h for h in sms.status(message_id)["history"] if h.get("errorCode") == "post-out"]
    assert "refused addresses" in failure["description"] and "64:ff9b::7f00:1" in failure["description"]
    assert sms.receiver.posts == []
