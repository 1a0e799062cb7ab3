"""Waiting, inside a test's event loop, until something is true."""

from __future__ import annotations

import asyncio


async def until(predicate, timeout: float = 60.0) -> None:
    """Return once ``predicate()`` is true (checked every 5 ms); fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
