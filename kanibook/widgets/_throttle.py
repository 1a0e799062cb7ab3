"""A small rate limiter for widget updates: the latest value wins, at most ``max_per_second`` applications.

A fast model can produce hundreds of tokens a second; sending each one to the browser would flood it. The
:class:`Throttle` keeps only the newest pending value and applies it at once if the last application is old
enough, otherwise once, at the end of the interval (a timer on the running event loop). ``flush()`` applies what
is pending immediately (the end of a reply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Throttle"]

T = TypeVar("T")
_NOTHING = object()


class Throttle(Generic[T]):
    """Apply the newest pushed value with ``apply(value)``, no more often than ``max_per_second``.

    :param apply: Called on the event loop with the newest value.
    :param max_per_second: The most applications in any second (the interval is ``1 / max_per_second``).
    """

    def __init__(self, apply: Callable[[T], None], max_per_second: float = 20.0):
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self._apply = apply
        self.interval = 1.0 / max_per_second
        self._pending: object = _NOTHING
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        #: How many times ``apply`` ran.
        self.applied = 0

    @property
    def pending(self) -> bool:
        return self._pending is not _NOTHING

    def push(self, value: T) -> None:
        """Offer a new value; applied now if the interval has passed, else once when it has (newest value wins)."""
        self._pending = value
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last + self.interval - loop.time()
        if wait <= 0:
            self._fire()
        else:
            self._timer = loop.call_later(wait, self._fire)

    def flush(self) -> None:
        """Apply the pending value now (if any) and cancel the timer."""
        self._cancel_timer()
        self._fire()

    def cancel(self) -> None:
        """Drop the pending value and the timer."""
        self._cancel_timer()
        self._pending = _NOTHING

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._pending is _NOTHING:
            return
        value, self._pending = self._pending, _NOTHING
        try:
            self._last = asyncio.get_running_loop().time()
        except RuntimeError:  # flushed outside a loop (e.g. after it closed): still apply
            pass
        self.applied += 1
        self._apply(value)  # type: ignore[arg-type]
