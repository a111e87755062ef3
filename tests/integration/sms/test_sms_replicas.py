"""Two replicas on one store share the SMS upstreams' failover state as they share the accounts'."""

from __future__ import annotations

from collections.abc import Callable

from gateway.runtime import Runtime
from tests.support.servers import wait_until
from tests.support.sms import SmsDeployment


def test_an_sms_upstream_verdict_on_one_replica_is_followed_by_the_other(
        make_sms: Callable[..., SmsDeployment]) -> None:
    # No probes during the test (probe_interval 60 s): only the shared state can move the other replica.
    sms = make_sms(start=False, failover={"failure_threshold": 1, "window": 10.0, "hold_time": 30.0,
                                          "probe_interval": 60.0})
    sms.with_second_upstream()
    sms.start_gateway()
    other = sms.start_replica()
    try:
        other_runtime: Runtime = other.app.state.runtime
        assert other_runtime.sms_cluster is not None
        assert other_runtime.sms_cluster.active == "sms1"
        sms.aggregator.set_mode("refuse")
        sms.wait_status(sms.submit(level="NONE"), "Delivered")  # sent through sms2 by one replica
        deliverer = sms.runtime if sms.runtime.sms_cluster and sms.runtime.sms_cluster.active == "sms2" \
            else other_runtime
        assert deliverer.sms_cluster is not None and deliverer.sms_cluster.active == "sms2"
        wait_until(lambda: sms.runtime.sms_cluster is not None and sms.runtime.sms_cluster.active == "sms2"
                   and other_runtime.sms_cluster.active == "sms2", timeout=1.5,
                   message="both replicas to send SMS through sms2")
    finally:
        other.stop()
