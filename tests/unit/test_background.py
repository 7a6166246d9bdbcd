"""The periodic background task the refreshers, the sweeper and the health watchers share."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nudge_server.background import periodic


async def test_a_tick_that_fails_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = 0
    three = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks >= 3:
            three.set()
        if ticks == 1:
            raise RuntimeError("the first tick fails")

    async with periodic("test-tick", 0.001, tick, crash_event="test_tick_crashed") as task:
        async with asyncio.timeout(10):  # a bound on a hang, not a measurement
            await three.wait()
    assert ticks >= 3
    crashed = [r for r in caplog.records if r.getMessage() == "test_tick_crashed"]
    assert len(crashed) == 1 and crashed[0].levelno == logging.ERROR
    assert crashed[0].exc_info is not None
    # Stopped: no tick after the block.
    after = ticks
    await asyncio.sleep(0.01)
    assert ticks == after
    await task.stop()  # stopping twice is a no-op


async def test_the_first_tick_waits_one_interval_unless_immediately() -> None:
    ran: list[str] = []

    async def tick(name: str) -> None:
        ran.append(name)

    async with (
        periodic("later", 3600, lambda: tick("later"), crash_event="x"),
        periodic("now", 3600, lambda: tick("now"), crash_event="x", immediately=True),
    ):
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0)
    assert ran == ["now"]


async def test_stop_cancels_a_tick_in_the_middle() -> None:
    entered = asyncio.Event()
    cancelled = False

    async def tick() -> None:
        nonlocal cancelled
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    task = periodic("stuck", 0.001, tick, crash_event="x")
    task.start()
    async with asyncio.timeout(10):
        await entered.wait()
    await task.stop()
    assert cancelled
