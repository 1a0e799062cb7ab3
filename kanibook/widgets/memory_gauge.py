"""A live memory gauge: a one-line reading and a bar, refreshed while a reply streams.

::

    gauge = MemoryGauge(engine)
    display(gauge)
    async with gauge:                      # samples every 0.2 s until the block ends
        async for piece in engine.stream(messages):
            ...

or ``gauge.start()`` / ``gauge.stop()`` from code that runs on the kernel's event loop (a cell, a widget callback,
the chat panel). Sampling never blocks the loop: a reading is a few microseconds (no CUDA synchronisation), and
the widgets are only sent a new value when what they show has changed, at most once per interval.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ipywidgets as widgets

from ..exceptions import KanibookError
from ..memory_view import MemoryReader, MemorySample, resolve_model
from ..render.memory import format_bytes, gauge_html

__all__ = ["MemoryGauge"]

MIN_INTERVAL_S = 0.05


class MemoryGauge(widgets.VBox):
    """Memory in use, live: CUDA allocated on the engine's GPU, else this process's resident memory.

    :param engine: A kanibook engine (or Kani / model) whose device is watched; None for the process (CPU).
    :param interval: Seconds between samples (at least 0.05).
    :param device: Watch this device instead of the engine's (``"cuda:0"``, ``"cpu"``).
    """

    def __init__(self, engine: Any = None, *, interval: float = 0.2, device: Any = None, **kwargs: Any):
        if device is None and engine is not None:
            _, _, device = resolve_model(engine)
        self._reader = MemoryReader(device)
        self._total = self._reader.total()
        self._label = widgets.HTML()
        self._label.add_class("kb-memory-gauge-label")
        self._bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=max(self._total / 1e6, 1.0), layout=widgets.Layout(width="100%")
        )
        self._bar.add_class("kb-memory-gauge-bar")
        super().__init__(children=[self._label, self._bar], **kwargs)
        self.add_class("kb-memory-gauge")
        #: Seconds between samples while running.
        self.interval = max(MIN_INTERVAL_S, float(interval))
        #: Readings taken so far.
        self.samples = 0
        #: How many times the widgets were sent a new value.
        self.updates = 0
        #: The highest reading since the last :meth:`start` (bytes).
        self.peak = 0
        #: The latest reading.
        self.last: MemorySample | None = None
        self._task: asyncio.Task | None = None
        self.refresh()

    @property
    def kind(self) -> str:
        """``"cuda"`` or ``"process"``: what the gauge measures."""
        return self._reader.kind

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def refresh(self) -> MemorySample:
        """Take one reading now and show it (the widgets are touched only if what they show changed)."""
        sample = self._reader.read()
        self.samples += 1
        self.last = sample
        used = sample.rss if sample.cuda_allocated is None else sample.cuda_allocated
        self.peak = max(self.peak, used)
        if sample.cuda_allocated is None:
            label = gauge_html("process RSS", used, self._total, self.peak)
        else:
            label = gauge_html(
                f"cuda:{self._reader.cuda_index} allocated", used, self._total, self.peak,
                detail=f"reserved {format_bytes(sample.cuda_reserved)}",
            )  # fmt: skip
        value = round(used / 1e6, 1)
        if label != self._label.value or value != self._bar.value:
            self._label.value = label
            self._bar.value = min(value, self._bar.max)
            self.updates += 1
        return sample

    def start(self) -> None:
        """Start sampling on the running event loop (call from a cell, a callback or async code)."""
        if self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KanibookError(
                "MemoryGauge.start() needs a running event loop: call it from a notebook cell or async code, "
                "or use  async with gauge: ..."
            ) from None
        self.peak = 0
        self._task = loop.create_task(self._run(), name="kanibook-memory-gauge")

    def stop(self) -> None:
        """Stop sampling (the task ends at the loop's next step) and show a final reading."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        self.refresh()

    async def aclose(self) -> None:
        """Stop sampling and wait until the sampling task has ended."""
        task = self._task
        self.stop()
        if task is not None:
            await asyncio.wait([task])  # never raises the task's CancelledError; our own cancellation still propagates

    async def _run(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> MemoryGauge:
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
