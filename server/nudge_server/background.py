"""A periodic background task: the refreshers, the sweeper and the health watchers run on it.

    async with periodic("nudge-config-refresh", 1.0, tick, crash_event="config_refresh_crashed"):
        ...  # `tick` runs every second until the block exits

`start()` and `stop()` do the same for a class that is itself an async context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]


class Periodic:
    """Runs `tick` every `interval_s` seconds in a task of its own, between `start` and `stop`.

    The first tick runs one interval after the start (at once with `immediately`); the interval
    is the pause between two ticks. A tick handles the errors it expects itself; anything else
    it lets out is logged as `crash_event`, with its traceback, and the next tick runs as
    usual: the loop outlives every failure. `stop` cancels the task, also in the middle of a
    tick, and waits for it to end.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        tick: Tick,
        *,
        crash_event: str,
        immediately: bool = False,
    ) -> None:
        self._name = name
        self._interval_s = interval_s
        self._tick = tick
        self._crash_event = crash_event
        self._immediately = immediately
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the task (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Cancels the task and waits until it has ended; a no-op when it is not running."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _loop(self) -> None:
        if not self._immediately:
            await asyncio.sleep(self._interval_s)
        while True:
            try:
                await self._tick()
            except Exception:
                log.exception(self._crash_event, extra={"task": self._name})
            await asyncio.sleep(self._interval_s)


def periodic(
    name: str,
    interval_s: float,
    tick: Tick,
    *,
    crash_event: str,
    immediately: bool = False,
) -> Periodic:
    """A `Periodic` task, to run with `async with` (or `start` and `stop`)."""
    return Periodic(name, interval_s, tick, crash_event=crash_event, immediately=immediately)
