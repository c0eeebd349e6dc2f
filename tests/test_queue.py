"""The work queue: bounded concurrency, first come first served, places in line, a per-person allowance."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainerbot.core.queue import Busy, WorkQueue


async def test_at_most_capacity_run_and_the_rest_are_told_their_place_in_order() -> None:
    queue = WorkQueue("a written reply", capacity=2, per_user=5)
    started: list[int] = []
    places: dict[int, int] = {}
    running = peak = 0
    release = asyncio.Event()

    async def job(n: int) -> None:
        nonlocal running, peak

        async def told(place: int) -> None:
            places[n] = place

        async with queue.turn(user_id=n, on_wait=told):
            started.append(n)
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(job(n)) for n in range(6)]
    await asyncio.sleep(0.01)
    assert started == [0, 1] and (queue.running, queue.waiting) == (2, 4)
    assert places == {2: 1, 3: 2, 4: 3, 5: 4}
    assert queue.place() == 5
    release.set()
    await asyncio.gather(*tasks)
    assert started == list(range(6)) and peak == 2
    assert (queue.running, queue.waiting, queue.served, queue.place()) == (0, 0, 6, 0)


async def test_one_person_cannot_fill_the_queue() -> None:
    queue = WorkQueue("a transcription", capacity=1, per_user=2)
    release = asyncio.Event()

    async def job(user: int) -> None:
        async with queue.turn(user):
            await release.wait()

    first, second = asyncio.create_task(job(7)), asyncio.create_task(job(7))
    await asyncio.sleep(0.01)
    with pytest.raises(Busy, match="already have 2 requests waiting for a transcription"):
        async with queue.turn(7):
            pass
    other = asyncio.create_task(job(8))  # someone else still gets in line
    await asyncio.sleep(0.01)
    assert queue.waiting == 2
    release.set()
    await asyncio.gather(first, second, other)
    async with queue.turn(7):  # the allowance comes back as requests end
        pass


async def test_a_caller_that_gives_up_waiting_passes_its_place_on() -> None:
    queue = WorkQueue("a written reply", capacity=1)
    release = asyncio.Event()
    order: list[str] = []

    async def job(name: str) -> None:
        async with queue.turn(hash(name)):
            order.append(name)
            await release.wait()

    tasks = {name: asyncio.create_task(job(name)) for name in "abc"}
    await asyncio.sleep(0.01)
    tasks["b"].cancel()
    release.set()
    await asyncio.gather(tasks["a"], tasks["c"])
    assert order == ["a", "c"] and tasks["b"].cancelled()
    assert (queue.running, queue.waiting) == (0, 0)


async def test_a_place_handed_over_to_a_caller_cancelled_at_that_moment_is_not_lost() -> None:
    queue = WorkQueue("a written reply", capacity=1)
    order: list[str] = []

    async def later(name: str) -> None:
        async with queue.turn(hash(name)):
            order.append(name)

    holder = queue.turn(1)
    await holder.__aenter__()
    b, c = asyncio.create_task(later("b")), asyncio.create_task(later("c"))
    await asyncio.sleep(0.01)
    await holder.__aexit__(None, None, None)  # the place is handed to b ...
    b.cancel()  # ... which is cancelled before it could run
    await asyncio.wait_for(asyncio.gather(b, c, return_exceptions=True), 5)
    assert b.cancelled() and order == ["c"]
    assert (queue.running, queue.waiting) == (0, 0)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans()), min_size=1, max_size=12),
)
def test_any_schedule_keeps_the_bounds_and_serves_everyone_who_stays(
    capacity: int, requests: list[tuple[int, int, bool]]
) -> None:
    """Whatever arrives, and whoever gives up: never more than capacity at once, and nothing left held."""

    async def scenario() -> None:
        queue = WorkQueue("work", capacity=capacity, per_user=2)
        running = peak = 0
        served: list[int] = []

        async def job(index: int, user: int, ticks: int) -> None:
            nonlocal running, peak
            try:
                async with queue.turn(user):
                    running += 1
                    peak = max(peak, running)
                    try:
                        for _ in range(ticks):
                            await asyncio.sleep(0)
                    finally:
                        running -= 1
                    served.append(index)
            except Busy:
                pass

        tasks = [asyncio.create_task(job(i, user, ticks)) for i, (user, ticks, _) in enumerate(requests)]
        await asyncio.sleep(0)
        for task, (_, _, gives_up) in zip(tasks, requests, strict=True):
            if gives_up:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= capacity
        assert (queue.running, queue.waiting) == (0, 0)
        finished = [i for i, task in enumerate(tasks) if not task.cancelled()]
        assert set(served) <= set(finished)

    asyncio.run(scenario())
