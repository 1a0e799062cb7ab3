"""Memory, inline: what is in use now, what a model will need before it is loaded, and how it moves while one reply
is generated.

- :func:`memory` -> :class:`MemoryReport`: per CUDA device allocated / reserved / peak / total; this process's
  resident memory and the system's; the loaded model's weights grouped by dtype (bitsandbytes tensors counted with
  their scales).
- :func:`estimate_memory` -> :class:`MemoryEstimate`: weights for each preset and the KV cache, from the config alone.
- :class:`MemorySampler` samples in a background thread; :func:`memory_timeline` records one generation with it.
  The live gauge is :class:`kanibook.widgets.memory_gauge.MemoryGauge`.

Modules, imports flowing one way: ``readings`` (the lowest: devices, process, weights, which model) <- ``estimate``,
``sampling``, ``report``; renderers live in :mod:`kanibook.render.memory`, which imports none of them.
Importing this package imports no torch; a reading never creates a CUDA context.
"""

from __future__ import annotations

from ..engine._peak_memory import PeakMemoryTracker, process_rss_bytes
from .estimate import MeasuredWeights, MemoryEstimate, PresetEstimate, estimate_memory
from .readings import (
    DeviceMemory,
    ProcessMemory,
    WeightFootprint,
    WeightGroup,
    cuda_memory,
    process_memory,
    resolve_model,
    weight_footprint,
)
from .report import MemoryReport, memory
from .sampling import MemoryReader, MemorySample, MemorySampler, MemoryTimeline, memory_timeline, memory_timeline_async

__all__ = [
    "DeviceMemory",
    "MeasuredWeights",
    "MemoryEstimate",
    "MemoryReader",
    "MemoryReport",
    "MemorySample",
    "MemorySampler",
    "MemoryTimeline",
    "PeakMemoryTracker",
    "PresetEstimate",
    "ProcessMemory",
    "WeightFootprint",
    "WeightGroup",
    "cuda_memory",
    "estimate_memory",
    "memory",
    "memory_timeline",
    "memory_timeline_async",
    "process_memory",
    "process_rss_bytes",
    "resolve_model",
    "weight_footprint",
]
