"""What fits: the best-quality setting whose weights and KV cache fit the free memory, from estimates alone.

No weights are loaded: :func:`kanibook.estimate_memory` gives each preset's weights and the KV cache for the context
length from the model's config. Quality is ranked by the lab's measurements when a report for the same model
exists (the one passed, or the latest :func:`kanibook.compare_quantization` of this process), else by the usual
order: more bits first (fp32, bf16, fp16, int8, nf4, nf4-dq, fp4, fp4-dq).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = ["Recommendation", "recommend_quant", "HEADROOM"]

#: Share of the free memory kept back for activations, the framework and everything else in the process.
HEADROOM = 0.10
_DEFAULT_RANK = ("fp32", "bf16", "fp16", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq")
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}  # fmt: skip


@dataclass(frozen=True)
class Recommendation:
    """The recommended setting, every candidate's numbers, and why.

    :param preset: The best-quality preset that fits, or None if none does.
    :param memory_bytes: The memory it had to fit in.
    :param memory_source: Where that figure came from (``"GPU free"``, ``"RAM available"``, ``"given"``).
    :param context_length: Tokens of KV cache counted.
    :param candidates: Per preset, in quality order: ``preset``, ``weights_bytes``, ``kv_cache_bytes``,
        ``needed_bytes`` (with the headroom), ``fits``, and ``kld_mean`` where measured.
    :param ranked_by: ``"measured"`` (a lab report's mean KL) or ``"bits"`` (the usual order).
    :param reason: One sentence with the numbers.
    """

    preset: str | None
    memory_bytes: int
    memory_source: str
    context_length: int
    candidates: tuple[dict, ...]
    ranked_by: str
    reason: str

    def __str__(self) -> str:
        from ..render.memory import format_bytes

        lines = [self.reason, f"(ranked by {'measured KL divergence' if self.ranked_by == 'measured' else 'bits'})"]
        for c in self.candidates:
            kl = f", mean KL {c['kld_mean']:.3g}" if c.get("kld_mean") is not None else ""
            lines.append(f"  {'✓' if c['fits'] else '✗'} {c['preset']:>7}: weights {format_bytes(c['weights_bytes'])} "
                         f"+ KV cache {format_bytes(c['kv_cache_bytes'])} -> needs {format_bytes(c['needed_bytes'])}"
                         f"{kl}")  # fmt: skip
        return "\n".join(lines)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render import safe

        rows = "".join(
            f"<li>{'✓' if line.lstrip().startswith('✓') else '✗'} {safe.text(line.strip()[2:])}</li>"
            for line in str(self).splitlines()[2:]
        )
        html = (f'<div class="kb-quant-recommend"><strong>{safe.text(self.reason)}</strong>'
                f"<ul style='margin:4px 0'>{rows}</ul></div>")  # fmt: skip
        return {"text/plain": str(self), "text/html": html}


def recommend_quant(
    model: Any = None, memory: int | str | None = None, context_length: int = 4096, *, report: Any = None
) -> Recommendation:
    """The best-quality setting that fits, with room for the KV cache, from memory estimates (no weights loaded).

    :param model: A model folder or Hugging Face id (only ``config.json`` is read), a config or a loaded engine;
        None for the embedded demo model.
    :param memory: The memory to fit in, in bytes or as text (``"6 GB"``, ``"512MiB"``); None for the free memory
        of the GPU if there is one, else the RAM available.
    :param context_length: Tokens of context to leave room for (KV cache).
    :param report: A :class:`~kanibook.QuantReport` (or the path of a saved one) to rank by measured quality; by
        default the latest comparison of this model in this process, if any.
    """
    from ..memory_view import estimate_memory
    from .lab import _LAST_REPORTS, _model_path

    path = _model_path(model) if model is None or isinstance(model, (str, os.PathLike)) else model
    estimate = estimate_memory(path, context_length=context_length)
    budget, source = _budget(memory)
    gpu = _has_cuda()
    key = getattr(path, "model_id", path)  # an engine: the report of the model it loaded
    measured = _measured_quality(report, _LAST_REPORTS.get(str(key)) if isinstance(key, (str, os.PathLike)) else None)
    order = [p for p in _DEFAULT_RANK if gpu or p != "fp16"]  # fp16 is slow on a CPU
    ranked_by = "bits"
    if measured:
        ranked_by = "measured"
        order = sorted(order, key=lambda p: (measured.get(p) is None, measured.get(p, 0.0), order.index(p)))
    candidates = []
    for preset in order:
        row = estimate.row(preset)
        needed = int((row.weights_bytes + row.kv_cache_bytes) / (1 - HEADROOM))
        candidates.append({"preset": preset, "weights_bytes": row.weights_bytes, "kv_cache_bytes": row.kv_cache_bytes,
                           "needed_bytes": needed, "fits": needed <= budget, "kld_mean": measured.get(preset)})  # fmt: skip
    best = next((c for c in candidates if c["fits"]), None)
    return Recommendation(
        preset=best["preset"] if best else None,
        memory_bytes=budget,
        memory_source=source,
        context_length=context_length,
        candidates=tuple(candidates),
        ranked_by=ranked_by,
        reason=_reason(best, candidates, budget, source, context_length, ranked_by),
    )


def _reason(best, candidates, budget: int, source: str, context_length: int, ranked_by: str) -> str:
    from ..render.memory import format_bytes

    room = f"{format_bytes(budget)} ({source})"
    if best is None:
        smallest = min(candidates, key=lambda c: c["needed_bytes"])
        return (f"Nothing fits in {room}: even {smallest['preset']} needs {format_bytes(smallest['needed_bytes'])} for "
                f"its weights and a {context_length}-token KV cache; try a shorter context or a smaller model.")  # fmt: skip
    better = candidates[: candidates.index(best)]
    why = "the best measured quality" if ranked_by == "measured" else "the most bits"
    text = (f"{best['preset']}: weights {format_bytes(best['weights_bytes'])} + KV cache for {context_length} tokens "
            f"{format_bytes(best['kv_cache_bytes'])}, ÷ {1 - HEADROOM:g} to keep {HEADROOM:.0%} of the memory free = "
            f"{format_bytes(best['needed_bytes'])},"
            f" within {room}; {why} that fits")  # fmt: skip
    if better:
        text += f" ({better[-1]['preset']} would need {format_bytes(better[-1]['needed_bytes'])})"
    return text + "."


def _budget(memory) -> tuple[int, str]:
    if memory is not None:
        return _parse_bytes(memory), "given"
    import psutil
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), "GPU free"
    return int(psutil.virtual_memory().available), "RAM available"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _parse_bytes(value) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise KanibookError(f"memory must be positive, not {value}.")
        return int(value)
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise KanibookError(f"memory={value!r} is not a size: pass bytes (an int) or text like '6 GB' or '512 MiB'.")
    return int(float(match.group(1)) * _UNITS[unit])


def _measured_quality(report, latest) -> dict[str, float]:
    """Preset -> measured mean KL from a report (a QuantReport, or the path of a saved one); {} without one."""
    if report is None:
        report = latest
    if report is None:
        return {}
    if isinstance(report, (str, os.PathLike)):
        from .report import QuantReport

        report = QuantReport.load(report)
    out = {}
    for r in report.rows:
        preset = r.get("preset")
        if r.get("available") and preset and r.get("kld_mean") is not None and preset not in out:
            out[preset] = r["kld_mean"]
    return out
