"""The memory report: what is in use now, displayed inline (HTML) and printable (text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..render import memory as render
from .readings import (
    DeviceMemory,
    ProcessMemory,
    WeightFootprint,
    cuda_memory,
    native_engine,
    process_memory,
    resolve_model,
    weight_footprint,
)

__all__ = ["MemoryReport", "memory"]


@dataclass(frozen=True)
class MemoryReport:
    """Memory in use now. Displays itself in notebooks (HTML) and prints as text."""

    devices: tuple[DeviceMemory, ...]
    process: ProcessMemory | None
    weights: WeightFootprint | None = None
    model_name: str | None = None
    cuda_note: str | None = None
    weights_note: str | None = None
    element_id: str | None = field(default=None, compare=False)

    def _repr_html_(self) -> str:
        return render.report_html(self, self.element_id)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/plain": render.report_text(self), "text/html": self._repr_html_()}

    def __str__(self) -> str:
        return render.report_text(self)


def memory(engine: Any = None, *, element_id: str | None = None) -> MemoryReport:
    """Memory in use now: each CUDA device, this process, and the loaded model's weights by dtype.

    :param engine: A kanibook engine, a kani ``Kani``, or a transformers model; None for the current session's
        engine (if any).
    :param element_id: An id for the root HTML element (deterministic output).
    """
    native = native_engine(engine)
    model, name, _ = (None, getattr(native, "model_id", None), None) if native is not None else resolve_model(engine)
    devices, note = cuda_memory()
    return MemoryReport(
        devices=tuple(devices),
        process=process_memory(),
        weights=None if model is None else weight_footprint(model),
        model_name=name,
        cuda_note=note,
        weights_note=None if native is None else (
            "llama.cpp holds this model's weights outside torch: they are part of the process's memory above "
            "(memory-mapped from the GGUF file); no per-dtype breakdown applies."
        ),
        element_id=element_id,
    )
