"""Memory over time: cheap repeated readings, a background sampler, and the timeline of one generation.

Public names are re-exported by :mod:`kanibook.memory_view`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import KanibookError
from ..render import memory as render
from .readings import resolve_model

__all__ = [
    "MemoryReader",
    "MemorySample",
    "MemorySampler",
    "MemoryTimeline",
    "memory_timeline",
    "memory_timeline_async",
]


# ---- sampling ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    """One reading: time (seconds), process RSS and, on a GPU, the device's allocated and reserved bytes."""

    t: float
    rss: int
    cuda_allocated: int | None = None
    cuda_reserved: int | None = None


class MemoryReader:
    """Cheap repeated readings for one device (no CUDA synchronisation; safe from any thread).

    :param device: ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or None / ``"cpu"`` for the process only.
    """

    def __init__(self, device: Any = None):
        import psutil

        self._process = psutil.Process()
        self.cuda_index: int | None = None
        if device is not None and str(device).startswith("cuda"):
            import torch

            index = torch.device(device).index
            self.cuda_index = torch.cuda.current_device() if index is None else int(index)
        self.kind = "process" if self.cuda_index is None else "cuda"

    def read(self) -> MemorySample:
        rss = self._process.memory_info().rss
        if self.cuda_index is None:
            return MemorySample(time.perf_counter(), rss)
        import torch

        i = self.cuda_index
        return MemorySample(time.perf_counter(), rss, torch.cuda.memory_allocated(i), torch.cuda.memory_reserved(i))

    def total(self) -> int:
        """The capacity the reading is measured against: the device's memory, or the system's."""
        if self.cuda_index is not None:
            import torch

            return int(torch.cuda.get_device_properties(self.cuda_index).total_memory)
        import psutil

        return int(psutil.virtual_memory().total)


class MemorySampler:
    """Samples memory every ``interval`` seconds in a background thread (``with`` block, or start/stop).

    :param device: As for :class:`MemoryReader`.
    :param interval: Seconds between samples.
    """

    def __init__(self, device: Any = None, interval: float = 0.02):
        self.reader = MemoryReader(device)
        self.interval = max(0.001, float(interval))
        self.samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        if self._thread is not None:
            raise KanibookError("This sampler is already running: stop() it before starting again.")
        self._stop.clear()
        self.samples.append(self.reader.read())
        self._thread = threading.Thread(target=self._loop, name="kanibook-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[MemorySample]:
        """Stop sampling (joins the thread), take one last sample and return all of them."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.samples.append(self.reader.read())
        return self.samples

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.reader.read())

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- one generation, recorded --------------------------------------------------------------------------------------


@dataclass
class MemoryTimeline:
    """Memory over one generation: samples (``t`` in seconds since the start), the first token and the end."""

    samples: list[MemorySample]
    first_token_s: float | None
    end_s: float
    kind: str
    model_name: str | None = None
    completion_tokens: int = 0
    stats: Any = None
    element_id: str | None = None
    _png: str | None = field(default=None, repr=False, compare=False)

    def series(self) -> dict[str, list[int]]:
        """The plotted series, in bytes: CUDA allocated and reserved on a GPU, the process's RSS otherwise."""
        if self.kind == "cuda":
            return {
                "CUDA allocated": [s.cuda_allocated or 0 for s in self.samples],
                "CUDA reserved": [s.cuda_reserved or 0 for s in self.samples],
            }
        return {"process RSS": [s.rss for s in self.samples]}

    def figure(self):
        """A new matplotlib ``Figure`` (not registered with pyplot, so nothing piles up)."""
        return render.timeline_figure(self)

    def png_base64(self) -> str:
        if self._png is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            fig = self.figure()
            FigureCanvasAgg(fig)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            self._png = base64.b64encode(buf.getvalue()).decode("ascii")
        return self._png

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        png = self.png_base64()
        return {
            "text/plain": render.timeline_text(self),
            "text/html": render.timeline_html(self, png, self.element_id),
            "image/png": png,
        }

    def __str__(self) -> str:
        return render.timeline_text(self)


def _as_messages(messages_or_prompt) -> list:
    from kani import ChatMessage

    if isinstance(messages_or_prompt, str):
        return [ChatMessage.user(messages_or_prompt)]
    if isinstance(messages_or_prompt, ChatMessage):
        return [messages_or_prompt]
    messages = list(messages_or_prompt)
    if not messages or not all(isinstance(m, ChatMessage) for m in messages):
        raise KanibookError("Pass a prompt string or a non-empty list of kani ChatMessage objects.")
    return messages


def _engine_of(obj):
    for attr in ("engine", "kani"):
        inner = getattr(obj, attr, None)
        inner = getattr(inner, "engine", inner) if attr == "kani" else inner
        if inner is not None and hasattr(inner, "stream"):
            return inner
    if not hasattr(obj, "stream"):
        raise KanibookError(f"Expected a kanibook engine (kanibook.load()), not {type(obj).__name__}.")
    return obj


async def memory_timeline_async(
    engine, messages_or_prompt, *, interval: float = 0.02, element_id: str | None = None, **generate_kwargs
) -> MemoryTimeline:
    """Generate one reply and record memory while it streams (sampled in a thread every ``interval`` seconds).

    :param engine: A kanibook engine (or a ``Kani`` / session around one).
    :param messages_or_prompt: A user prompt, or a list of kani ``ChatMessage``.
    :param interval: Seconds between samples.
    :param element_id: An id for the root HTML element.
    :param generate_kwargs: Generation arguments (``max_new_tokens=...``, ...).
    """
    engine = _engine_of(engine)
    messages = _as_messages(messages_or_prompt)

    _, name, device = resolve_model(engine)
    sampler = MemorySampler(device, interval)
    completion = None
    first = None
    start = time.perf_counter()
    sampler.start()
    try:
        async for item in engine.stream(messages, **generate_kwargs):
            if isinstance(item, str):
                if first is None:
                    first = time.perf_counter()
            else:
                completion = item
    finally:
        end = time.perf_counter()
        samples = sampler.stop()
    stats = getattr(completion, "stats", None)
    return MemoryTimeline(
        samples=[MemorySample(s.t - start, s.rss, s.cuda_allocated, s.cuda_reserved) for s in samples],
        first_token_s=None if first is None else first - start,
        end_s=end - start,
        kind=sampler.reader.kind,
        model_name=name,
        completion_tokens=getattr(completion, "completion_tokens", None) or 0,
        stats=stats,
        element_id=element_id,
    )


def memory_timeline(
    engine, messages_or_prompt, *, interval: float = 0.02, element_id: str | None = None, **generate_kwargs
):
    """:func:`memory_timeline_async`, waited for (in a notebook this blocks the cell until the reply is done).

    Inside a running event loop (a notebook cell) the generation runs on a private loop in a helper thread; use
    ``await memory_timeline_async(...)`` to keep the kernel responsive instead.
    """
    coro = memory_timeline_async(
        engine, messages_or_prompt, interval=interval, element_id=element_id, **generate_kwargs
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=run, name="kanibook-memory-timeline", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
