"""One failover policy's state shared by every replica through the store (latest write wins).

A replica that makes a decision (a health verdict, a switch, an operator's override) publishes its
policy's snapshot under a key; every replica polls the key and adopts a newer snapshot another
replica wrote. The Responsys accounts and the SMS upstreams each have one (`failover`,
`sms-failover`), so a verdict made by one replica is followed by all within one poll interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.store import Store
from policies.failover import FailoverPolicy, snapshot_from_json, snapshot_to_json

log = logging.getLogger("aftm.runtime")


class SharedFailover:
    def __init__(self, *, key: str, policy: FailoverPolicy, store: Callable[[], Store], replica: str,
                 what: str = "traffic") -> None:
        self.key = key
        self.policy = policy
        self._store = store
        self._replica = replica
        self._what = what
        self._applied = 0.0  # updated_at of the shared state this replica last saw or wrote

    async def publish(self) -> None:
        """Write this replica's state for the others; a store outage keeps the verdict local until later."""
        updated_at = time.time()
        self._applied = max(self._applied, updated_at)
        try:
            await self._store().shared_put(self.key, snapshot_to_json(self.policy.snapshot()),
                                           updated_at=updated_at, replica=self._replica)
        except Exception as exc:
            log.warning("could not share the failover state", extra={"reason": str(exc), "key": self.key})

    async def follow(self) -> None:
        """Adopt a newer state another replica wrote; a store outage or a foreign value keeps the local one."""
        try:
            shared = await self._store().shared_get(self.key)
            if shared is None or shared.replica == self._replica or shared.updated_at <= self._applied:
                return
            before = self.policy.active
            self.policy.restore(snapshot_from_json(shared.value))
            self._applied = shared.updated_at
            if self.policy.active != before:
                log.warning("%s moved from %s to %s (decided by replica %s)", self._what, before,
                            self.policy.active, shared.replica)
        except Exception as exc:
            log.warning("could not follow the shared failover state", extra={"reason": str(exc), "key": self.key})
