"""Memory readings: CUDA devices, this process, a loaded model's weights by dtype, and which model an object means.

The lowest layer of :mod:`kanibook.memory_view`: the estimate, the sampling and the report build on it; it imports
none of them. Importing it imports no torch. CUDA is read only where torch is already imported and CUDA already
initialised: a reading never creates a CUDA context.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = [
    "DeviceMemory",
    "ProcessMemory",
    "WeightFootprint",
    "WeightGroup",
    "cuda_memory",
    "native_engine",
    "process_memory",
    "resolve_model",
    "weight_footprint",
]


# ---- readings ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    """One CUDA device, as PyTorch's caching allocator sees it (this process only), in bytes."""

    index: int
    name: str
    allocated: int
    reserved: int
    peak_allocated: int  # since the process started or the last reset_peak_memory_stats (each kanibook turn resets)
    total: int


@dataclass(frozen=True)
class ProcessMemory:
    """This process's resident memory and the system's memory, in bytes."""

    rss: int
    peak_rss: int | None
    system_total: int
    system_available: int


@dataclass(frozen=True)
class WeightGroup:
    """Tensors of one dtype on one device (quantized tensors labelled by their format, e.g. ``nf4``, ``int8``)."""

    dtype: str
    device: str
    tensors: int
    elements: int
    bytes: int


@dataclass(frozen=True)
class WeightFootprint:
    """A loaded model's parameters and buffers, grouped by dtype and device.

    :param groups: The groups, largest first; their bytes sum to :attr:`total_bytes`.
    :param parameter_bytes: ``numel * element_size`` over the parameters.
    :param buffer_bytes: The same over the buffers.
    :param storage_overhead_bytes: bitsandbytes' quantization state kept beside the weights (4-bit absmax and
        lookup tables, int8 row scales); ``model.get_memory_footprint()`` does not count it.
    :param preset: The kanibook preset the model matches (``fp32``, ``bf16``, ``int8``, ``nf4-dq``, ...), if any.
    """

    groups: tuple[WeightGroup, ...]
    parameter_bytes: int
    buffer_bytes: int
    storage_overhead_bytes: int
    preset: str | None

    @property
    def transformers_bytes(self) -> int:
        """What ``model.get_memory_footprint()`` reports: parameters and buffers, without quantization state."""
        return self.parameter_bytes + self.buffer_bytes

    @property
    def total_bytes(self) -> int:
        """Everything the weights really occupy."""
        return self.transformers_bytes + self.storage_overhead_bytes


def cuda_memory() -> tuple[list[DeviceMemory], str | None]:
    """Readings of every CUDA device, and a note when there is none to read (``([], None)`` without CUDA).

    Nothing is read (and no CUDA context is created) unless torch is already imported and CUDA initialised.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return [], None
    try:
        if not torch.cuda.is_available():
            return [], None
        count = torch.cuda.device_count()
        if not torch.cuda.is_initialized():
            plural = "s" if count != 1 else ""
            return (
                [],
                f"CUDA is available ({count} device{plural}) but not initialised in this process: nothing is allocated on it.",
            )
    except Exception:  # noqa: BLE001 - a broken driver must not break a memory view
        return [], None
    devices = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        devices.append(
            DeviceMemory(
                index=i,
                name=str(props.name),
                allocated=int(torch.cuda.memory_allocated(i)),
                reserved=int(torch.cuda.memory_reserved(i)),
                peak_allocated=int(torch.cuda.max_memory_allocated(i)),
                total=int(props.total_memory),
            )
        )
    return devices, None


_highest_rss = 0  # the highest RSS any reading of this process saw


def process_memory() -> ProcessMemory:
    """This process's resident memory (and its peak where the OS tells), and the system's total and available.

    The peak is never below the current reading. On Linux both come from one read of ``/proc/self/status``
    (``VmRSS`` and ``VmHWM``, which the kernel computes together); ``getrusage``'s ``ru_maxrss`` is only a fallback,
    as it can lag behind the current RSS (the kernel batches its per-thread RSS counters), which once showed a peak
    1 MB below the current reading. The kernel's own high-water mark is only updated at certain events, so the
    peak is also never below the highest RSS any earlier reading of this process saw.
    """
    import psutil

    rss, peak = _proc_status()
    if rss is None:
        info = psutil.Process().memory_info()
        rss, peak = int(info.rss), getattr(info, "peak_wset", None)  # peak_wset: Windows
        if peak is None:
            try:
                import resource

                scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            except (ImportError, OSError, AttributeError):
                peak = None
    global _highest_rss
    _highest_rss = max(_highest_rss, rss)
    if peak is not None:  # the kernel's high-water mark can lag a reading: never show a peak below one seen
        peak = max(int(peak), _highest_rss)
    vm = psutil.virtual_memory()
    return ProcessMemory(rss=rss, peak_rss=peak, system_total=int(vm.total), system_available=int(vm.available))


def _proc_status() -> tuple[int | None, int | None]:
    """``VmRSS`` and ``VmHWM`` from one read of ``/proc/self/status``, in bytes (None, None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            status = f.read()
    except OSError:
        return None, None
    found = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            parts = value.split()
            if parts and parts[0].isdigit():
                found[key] = int(parts[0]) * 1024  # the kernel writes kB (KiB)
    if "VmRSS" not in found:
        return None, None
    return found["VmRSS"], found.get("VmHWM")


def _quant_state_tensors(param):
    """The tensors bitsandbytes keeps beside a quantized weight (4-bit quant state, int8 row scales)."""
    state = getattr(param, "quant_state", None)
    if state is not None:
        yield state.absmax
        yield state.code
        if getattr(state, "nested", False):
            yield state.offset
            yield state.state2.absmax
            yield state.state2.code
    scb = getattr(param, "SCB", None)
    if scb is not None:
        yield scb


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensor_label(t) -> str:
    kind = type(t).__name__
    if kind == "Params4bit":
        return str(getattr(t, "quant_type", "4bit"))
    if kind == "Int8Params":
        return "int8"
    return _dtype_name(t.dtype)


def _weight_count(t) -> int:
    """How many weights a tensor holds (a packed 4-bit tensor holds two per byte)."""
    shape = getattr(getattr(t, "quant_state", None), "shape", None)
    if type(t).__name__ == "Params4bit":
        if shape is not None:
            return math.prod(shape)
        return t.numel() * t.element_size() * 2
    return t.numel()


def weight_footprint(model) -> WeightFootprint:
    """A loaded model's parameters and buffers grouped by dtype and device; bitsandbytes tensors with their state.

    :param model: A ``torch.nn.Module`` (e.g. ``engine.model``).
    """
    groups: dict[tuple[str, str], list[int]] = {}
    seen: set[int] = set()
    param_bytes = buffer_bytes = overhead = 0
    presets: dict[str, int] = {}
    for is_param, tensors in ((True, model.parameters()), (False, model.buffers())):
        for t in tensors:
            nbytes = t.numel() * t.element_size()
            extra = 0
            for s in _quant_state_tensors(t):
                key = s.data_ptr() or id(s)
                if key not in seen:
                    seen.add(key)
                    extra += s.numel() * s.element_size()
            label = _tensor_label(t)
            entry = groups.setdefault((label, str(t.device)), [0, 0, 0])
            entry[0] += 1
            entry[1] += _weight_count(t)
            entry[2] += nbytes + extra
            overhead += extra
            if is_param:
                param_bytes += nbytes
                preset = _preset_of(t, label)
                presets[preset] = presets.get(preset, 0) + nbytes
            else:
                buffer_bytes += nbytes
    ordered = sorted(groups.items(), key=lambda kv: -kv[1][2])
    return WeightFootprint(
        groups=tuple(WeightGroup(dtype, device, n, e, b) for (dtype, device), (n, e, b) in ordered),
        parameter_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        storage_overhead_bytes=overhead,
        preset=_model_preset(presets),
    )


_FLOAT_PRESETS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _preset_of(t, label: str) -> str:
    if label in ("nf4", "fp4"):
        state = getattr(t, "quant_state", None)
        return label + ("-dq" if getattr(state, "nested", False) else "")
    return _FLOAT_PRESETS.get(label, label)


def _model_preset(bytes_by_preset: dict[str, int]) -> str | None:
    """A quantized format if any weight has one, else the dtype holding most bytes (None if not a preset)."""
    for quantized in ("nf4-dq", "fp4-dq", "nf4", "fp4", "int8"):
        if quantized in bytes_by_preset:
            return quantized
    if not bytes_by_preset:
        return None
    top = max(bytes_by_preset, key=bytes_by_preset.get)
    return top if top in _FLOAT_PRESETS.values() else None


# ---- which model ---------------------------------------------------------------------------------------------------


def _session_engine():
    """The engine of the current kanibook session (the magics' one), if there is such a session."""
    try:
        from ..conversation.session import current_session
    except ImportError:
        return None
    try:
        session = current_session()
        if session is None or not getattr(session, "loaded", True):  # never load a model just to read memory
            return None
        engine = session.engine
    except (KanibookError, LookupError, RuntimeError, AttributeError):
        return None
    return engine if _is_module(getattr(engine, "model", None)) else None  # e.g. an OpenAI engine has no weights here


def resolve_model(obj: Any) -> tuple[Any, str | None, str | None]:
    """``(model, name, device)`` of an engine, a kani ``Kani``, a session or a transformers model (Nones for None).

    :param obj: A kanibook / kani Hugging Face engine, something with an ``.engine`` (``Kani``, a chat session),
        a ``torch.nn.Module``, or None for the current session's engine.
    """
    if obj is None:
        obj = _session_engine()
        if obj is None:
            return None, None, None
    if not _is_module(obj) and getattr(obj, "loaded", True) is False:  # a chat session with no model yet
        return None, None, None
    if not _is_module(obj):
        for attr in ("engine", "kani"):
            inner = getattr(obj, attr, None)
            inner = getattr(inner, "engine", inner) if attr == "kani" else inner
            if inner is not None and _is_module(getattr(inner, "model", None)):
                obj = inner
                break
    if _is_module(obj):
        return obj, _model_name(obj), _module_device(obj)
    model = getattr(obj, "model", None)
    if _is_module(model):
        name = getattr(obj, "model_id", None) or _model_name(model)
        device = getattr(obj, "device", None) or _module_device(model)
        return model, str(name), None if device is None else str(device)
    raise KanibookError(
        f"Expected a kanibook engine, a kani Kani or a transformers model, not {type(obj).__name__}: "
        "pass e.g. kanibook.load() or engine.model."
    )


def native_engine(obj: Any):
    """The engine, if ``obj`` is (or wraps) one whose model is not a torch module (llama.cpp's), else None."""
    for candidate in (obj, getattr(obj, "engine", None), getattr(getattr(obj, "kani", None), "engine", None)):
        model = getattr(candidate, "model", None)
        if model is not None and type(model).__module__.split(".")[0] == "llama_cpp":
            return candidate
    return None


def _is_module(obj) -> bool:
    return obj is not None and all(hasattr(obj, a) for a in ("parameters", "buffers", "named_modules"))


def _model_name(model) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "model_type", None) or type(model).__name__


def _module_device(model) -> str | None:
    for p in model.parameters():
        return str(p.device)
    return None
