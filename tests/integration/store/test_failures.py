"""Failure entries on every backend: recording, joining later delivery data, querying, posting state."""

from __future__ import annotations

import asyncio

from gateway.store import FailureQuery, NewFailure, Store, open_store
from tests.support.clock import FakeClock

HOSTILE = 'quote " lt < amp & newline\n end'


def failure(at: float, *, client: str = "app", code: int = 2, send_id: str = "", numbers: str = "+15551230000",
            account: str | None = "primary", error: str = "Not Sent: rejected") -> NewFailure:
    return NewFailure(kind="upstream_rejected", code=code, client=client, account=account, keyword="welcome",
                      numbers=numbers, send_id=send_id, primary_at=at, primary_error=error)


async def test_entries_get_increasing_ids_and_read_back_unchanged(store: Store, clock: FakeClock) -> None:
    first = await store.record_failure(failure(clock(), error=HOSTILE))
    second = await store.record_failure(failure(clock() + 1))
    assert second.id > first.id
    again = await store.failure(first.id)
    assert again == first and again.primary_error == HOSTILE
    assert (again.revision, again.posted_revision) == (1, 0)
    assert await store.failure(second.id + 1000) is None


async def test_a_later_delivery_failure_is_joined_to_its_send(store: Store, clock: FakeClock) -> None:
    original = await store.record_failure(failure(clock(), code=32, send_id="msg-1", error="carrier said no"))
    other_client = await store.record_failure(failure(clock(), client="other", send_id="msg-1"))
    later = NewFailure(kind="delivery_failed", code=2048, client="app", send_id="msg-1", primary_at=clock() + 60,
                       secondary_at=clock() + 60, secondary_error="handset off")
    joined = await store.add_delivery_failure(later, snippet='Message: "Your PIN is 1234"')
    assert joined.id == original.id
    assert joined.code == 32 | 2048
    assert joined.primary_error == 'carrier said no; Message: "Your PIN is 1234"'
    assert (joined.secondary_at, joined.secondary_error) == (clock() + 60, "handset off")
    assert joined.revision == 2 and joined.primary_at == original.primary_at
    assert await store.failure(other_client.id) == other_client  # another client's send id is not joined


async def test_a_delivery_failure_without_an_entry_gets_one_with_the_snippet(store: Store, clock: FakeClock) -> None:
    later = NewFailure(kind="delivery_failed", code=2048, client="app", send_id="msg-9", primary_at=clock(),
                       secondary_at=clock(), secondary_error="unknown subscriber")
    entry = await store.add_delivery_failure(later, snippet='Message: "hello"')
    assert entry.primary_error == 'Message: "hello"' and entry.code == 2048 and entry.revision == 1


async def test_queries_filter_by_time_code_client_account_and_recipient(store: Store, clock: FakeClock) -> None:
    t = clock()
    await store.record_failure(failure(t, code=1, numbers="+15550001111", account=None))
    await store.record_failure(failure(t + 3600, code=2, numbers="+15550002222"))
    await store.record_failure(failure(t + 7200, code=32 | 2048, numbers="100%_sure"))
    await store.record_failure(failure(t + 7200, client="other", code=2))

    async def codes(**filters: object) -> list[int]:
        return [r.code for r in await store.failures(FailureQuery(**filters))]  # type: ignore[arg-type]

    assert await codes(client="app") == [2080, 2, 1]  # newest first
    assert await codes(client="app", since=t + 1, until=t + 7200) == [2]
    assert await codes(client="app", code_mask=2048 | 1) == [2080, 1]
    assert await codes(client="app", account="primary") == [2080, 2]
    assert await codes(recipient="0002222") == [2]
    assert await codes(recipient="%_") == [2080]  # LIKE wildcards are matched literally
    assert await codes(client="app", limit=1, offset=1) == [2]
    assert await store.count_failures(FailureQuery(client="app", limit=1)) == 3
    hours = await store.failure_hours(FailureQuery(client="app"))
    start = t // 3600 * 3600
    assert hours == [(start, 1, 1), (start + 3600, 2, 1), (start + 7200, 2080, 1)]


async def test_posting_state_moves_only_for_the_revision_posted(store: Store, clock: FakeClock) -> None:
    a = await store.record_failure(failure(clock(), send_id="s-a"))
    b = await store.record_failure(failure(clock(), send_id="s-b"))
    await store.record_failure(failure(clock(), client="other"))
    due = await store.failures_to_post("app", 10)
    assert [r.id for r in due] == [a.id, b.id]
    # b gets delivery data after it was read for posting: the post of revision 1 leaves it due.
    await store.add_delivery_failure(NewFailure(kind="delivery_failed", code=2048, client="app", send_id="s-b",
                                                primary_at=clock(), secondary_at=clock(), secondary_error="x"),
                                     snippet="m")
    await store.mark_failures_posted([(r.id, r.revision) for r in due])
    again = await store.failures_to_post("app", 10)
    assert [(r.id, r.revision) for r in again] == [(b.id, 2)]
    await store.mark_failures_posted([(b.id, 2)])
    assert await store.failures_to_post("app", 10) == []
    await store.mark_failures_posted([(b.id, 1)])  # a late acknowledgement of an older revision
    assert await store.failures_to_post("app", 10) == []
    assert len(await store.failures_to_post("other", 10)) == 1


async def test_one_poster_per_client_at_a_time_and_a_dead_ones_lease_expires(store_url: str,
                                                                             clock: FakeClock) -> None:
    one, two = await open_store(store_url, clock=clock), await open_store(store_url, clock=clock)
    try:
        now = clock()
        results = await asyncio.gather(one.lease_poster("app", "r1", now, 60), two.lease_poster("app", "r2", now, 60))
        assert sorted(results) == [False, True]
        winner, loser = ("r1", "r2") if results[0] else ("r2", "r1")
        store_of = {"r1": one, "r2": two}
        assert await store_of[winner].lease_poster("app", winner, now + 1, 60)  # renewing is fine
        assert await store_of[loser].lease_poster("other", loser, now, 60)  # another client is free
        assert not await store_of[loser].lease_poster("app", loser, now + 30, 60)
        assert await store_of[loser].lease_poster("app", loser, now + 62, 60)  # the winner died: expired
        await store_of[loser].release_poster("app", loser)
        assert await store_of[winner].lease_poster("app", winner, now + 63, 60)
    finally:
        await one.close()
        await two.close()


async def test_old_entries_are_purged(store: Store, clock: FakeClock) -> None:
    old = await store.record_failure(failure(clock() - 40 * 86400))
    new = await store.record_failure(failure(clock()))
    assert await store.purge_failures(clock() - 31 * 86400) == 1
    assert await store.failure(old.id) is None and await store.failure(new.id) is not None
