"""The password check queue runs the lowest rank next, not the earliest arrival."""

from __future__ import annotations

import asyncio
import threading

from gateway.edge.password_checks import CheckQueue


async def test_a_waiting_check_of_lower_rank_runs_before_earlier_ones_of_higher_rank() -> None:
    queue = CheckQueue(threads=1, thread_name_prefix="test-check")
    release = threading.Event()
    order: list[str] = []

    def work(name: str) -> bool:
        if name == "busy":
            release.wait(5)
        order.append(name)
        return True

    try:
        busy = queue.submit(0, lambda: work("busy"))
        storm = [queue.submit(3, lambda n=n: work(f"storm{n}")) for n in range(3)]
        app = queue.submit(0, lambda: work("app"))
        assert queue.waiting == 5
        release.set()
        assert await asyncio.wait_for(asyncio.gather(busy, app, *storm), 5) == [True] * 5
    finally:
        queue.close()
    assert order == ["busy", "app", "storm0", "storm1", "storm2"]
    assert queue.waiting == 0
