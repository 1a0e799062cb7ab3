"""The lab's measurements of one loaded setting: memory now (and its release between settings), the weights, the
speed of its answers (medians over repeated answers) and the dtype its matrix products really run in."""

from __future__ import annotations

import ctypes
import gc
import statistics

__all__ = ["compute_dtype_of", "footprint", "memory_now", "release_memory", "speed"]



def memory_now(device: str) -> int:
    """CUDA's allocated bytes on a GPU, the process's resident memory elsewhere."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.memory_allocated(device))
    from ..engine._peak_memory import process_rss_bytes

    return process_rss_bytes()


def release_memory(device: str) -> None:
    """Collect garbage, empty CUDA's cache, and hand freed heap memory back to the system (glibc's ``malloc_trim``).

    Done as a job on the model thread: that thread drops its previous job (and the model it held) before taking
    this one, so what was deleted is really gone when this returns.
    """
    from ..engine._model_thread import model_thread

    model_thread().run(_collect, device)


def _collect(device: str) -> None:
    gc.collect()
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def footprint(model) -> dict:
    from ..memory_view import weight_footprint

    fp = weight_footprint(model)
    return {"weights_bytes": fp.total_bytes, "footprint_bytes": int(model.get_memory_footprint())}


def speed(answers: list[dict], before_load: int | None = None) -> dict:
    """Medians of time to first token and decode speed over every measured answer; the largest peak memory, and
    how far it rose above the memory measured just before this setting loaded (``peak_added_bytes``)."""
    stats = [s for a in answers for s in a.get("runs", [a["stats"]])]
    ttft = [s["time_to_first_token_s"] for s in stats if s["time_to_first_token_s"] is not None]
    rates = [s["tokens_per_second"] for s in stats if s["tokens_per_second"]]
    peak = max((s["peak_memory_bytes"] for s in stats if s["peak_memory_bytes"] is not None), default=None)
    return {
        "ttft_s": statistics.median(ttft) if ttft else None,
        "decode_tok_s": statistics.median(rates) if rates else None,
        "speed_answers": len(rates),
        "peak_memory_bytes": peak,
        "peak_added_bytes": None if peak is None or before_load is None else max(0, peak - before_load),
        "memory_kind": stats[0]["memory_kind"] if stats else None,
    }


def compute_dtype_of(model) -> str:
    """The dtype the model's matrix products really run in, read from the loaded layers after a forward pass.

    bitsandbytes' 4-bit layers cast their input to their ``compute_dtype``, except on a CPU with AVX512-BF16, where
    the first forward pass repacks the weights for a kernel that multiplies in bfloat16 *whatever* ``compute_dtype``
    says (measured: nf4 with ``compute_dtype=float32`` and with ``bfloat16`` give identical logits there); LLM.int8
    layers multiply in 8 bits with outlier columns in the activations' dtype; every other layer computes in its
    weights' dtype.
    """
    four = next((m for m in model.modules() if type(m).__name__ in ("Linear4bit", "LinearFP4", "LinearNF4")), None)
    if four is not None:
        asked = str(getattr(four, "compute_dtype", None)).replace("torch.", "")
        state = getattr(getattr(four, "weight", None), "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            unused = "" if asked == "bfloat16" else f"; compute_dtype {asked} not used"
            return f"bfloat16 (bitsandbytes' AVX512-BF16 CPU kernel{unused})"
        if asked != "None":
            return asked
    dtype = _float_dtype(model)
    if any(type(m).__name__ == "Linear8bitLt" for m in model.modules()):
        return f"int8 (outliers in {dtype})"
    return dtype


def _float_dtype(model) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).replace("torch.", "")
    return "unknown"
