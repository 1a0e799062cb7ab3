"""What quantization does to the weights: each linear layer's dequantized weight against the reference's, and the
levels a format can represent, drawn over a real weight distribution.

- :func:`dequantized_linears`: every linear layer inside the decoder blocks as an fp32 weight, whatever its format
  (bitsandbytes ``Linear4bit``: ``dequantize_4bit``; ``Linear8bitLt``: the int8 rows times their scale ``SCB / 127``;
  a plain ``nn.Linear``: its weight);
- :class:`ReferenceWeights`: the reference's weights read one tensor at a time from its safetensors files, so the
  lab keeps no second copy of the model in memory;
- :func:`weight_summary`: relative error (``||W_q - W|| / ||W||``) per module, with its block index and kind
  (``q_proj``, ``down_proj``, ...);
- :func:`histogram`: one module's weights as a histogram, with what the formats do to it: nf4's 16 normal quantiles
  and fp4's levels scaled by a typical 64-weight block's absmax, int8's levels at a typical row's scale.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["dequantized_linears", "ReferenceWeights", "weight_summary", "histogram", "tail_ratio", "FORMAT_CODES"]

_BLOCK = re.compile(r"\.(\d+)\.")
_BLOCKSIZE = 64  # bitsandbytes' 4-bit block size in transformers' default config

#: bitsandbytes' 4-bit code books (``bitsandbytes.functional.get_4bit_type``), as fractions of a block's absmax
FORMAT_CODES = {
    "nf4": [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
            1.0],
    "fp4": [0.0, 0.0052083333, 0.6666666667, 1.0, 0.3333333333, 0.5, 0.1666666667, 0.25, 0.0, -0.0052083333,
            -0.6666666667, -1.0, -0.3333333333, -0.5, -0.1666666667, -0.25],
}  # fmt: skip


def block_and_kind(name: str) -> tuple[int | None, str]:
    """``("model.layers.3.mlp.down_proj")`` -> ``(3, "down_proj")``."""
    found = _BLOCK.search(name)
    return (int(found.group(1)) if found else None), name.rsplit(".", 1)[-1]


def dequantized_linears(model, blocks_path: str) -> dict[str, Any]:
    """``{module name: fp32 CPU weight}`` for every linear layer under ``blocks_path`` (e.g. ``model.layers``)."""
    import torch

    out = {}
    for name, module in model.named_modules():
        if not name.startswith(blocks_path + "."):
            continue
        w = _dequantized(module, torch)
        if w is not None:
            out[name] = w
    return out


def _dequantized(module, torch):
    kind = type(module).__name__
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    if kind == "Linear4bit" and getattr(weight, "quant_state", None) is not None:
        import bitsandbytes.functional as F

        data, state = weight.data, weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):  # repacked for the CPU kernel on the first forward
            import copy  # the inverse rewrites the state it is given: the module keeps its own

            nested = state.original_nested
            data, state = F._convert_weight_packed_for_cpu_inverse(data, copy.deepcopy(state))
            if not nested:  # bitsandbytes 0.50 restores the absmax's order only for nested (double-quant) states
                state.absmax = state.absmax.T.reshape(-1).float()
        return F.dequantize_4bit(data, state).float().cpu()
    if kind == "Linear8bitLt":
        # the row scales live on the weight until the first forward moves them to the module's state
        scb = getattr(weight, "SCB", None)
        scb = scb if scb is not None else getattr(getattr(module, "state", None), "SCB", None)
        if scb is not None and weight.dtype == torch.int8:
            return (weight.data.float() * scb.float()[:, None] / 127.0).cpu()
    if isinstance(module, torch.nn.Linear) or kind in {"Linear4bit", "Linear8bitLt"}:
        return weight.detach().float().cpu()
    return None


class ReferenceWeights:
    """The reference model's weights, one tensor at a time, from its safetensors files (no copy kept in memory)."""

    def __init__(self, path: Any):
        self.files: dict[str, Path] = {}
        folder = _folder(path)
        if folder is None:
            return
        index = folder / "model.safetensors.index.json"
        if index.exists():
            mapping = json.loads(index.read_text()).get("weight_map", {})
            self.files = {k: folder / v for k, v in mapping.items()}
        elif (folder / "model.safetensors").exists():
            from safetensors import safe_open

            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                self.files = dict.fromkeys(f.keys(), folder / "model.safetensors")

    def __bool__(self) -> bool:
        return bool(self.files)

    def get(self, name: str):
        """The fp32 tensor ``name`` (e.g. ``"model.layers.0.mlp.up_proj.weight"``), or None."""
        return dict(self.tensors([name])).get(name)

    def tensors(self, names):
        """``(name, fp32 tensor)`` for each of ``names`` found, each file opened once."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name in self.files:
                by_file.setdefault(self.files[name], []).append(name)
        for file, wanted in by_file.items():
            with safe_open(str(file), framework="pt") as f:
                for name in wanted:
                    yield name, f.get_tensor(name).float()


def _folder(path: Any) -> Path | None:
    if os.path.isdir(os.fspath(path)):
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), local_files_only=True, allow_patterns=["*.safetensors", "*.json"]))
    except Exception:  # noqa: BLE001 - not in the local cache: the weights part says so
        return None


def weight_summary(quantized: dict[str, Any], reference: ReferenceWeights) -> list[dict]:
    """Per module: ``{"name", "block", "kind", "rel_error"}`` (the relative Frobenius error), in module order."""
    rows = []
    for key, ref in reference.tensors([name + ".weight" for name in quantized]):
        name = key[: -len(".weight")]
        w = quantized[name]
        if ref.shape != w.shape:
            continue
        block, kind = block_and_kind(name)
        err = float((w - ref).norm() / ref.norm().clamp_min(1e-30))
        rows.append({"name": name, "block": block, "kind": kind, "rel_error": err})
    return rows


def tail_ratio(w) -> float:
    """``max |w| / std(w)``: how far a matrix's largest weight sits from the bulk (absmax scaling wastes levels on
    heavy tails)."""
    return float(w.abs().max() / w.std().clamp_min(1e-30))


def histogram(name: str, w, bins: int = 120) -> dict:
    """One module's weights as a histogram over the range a median row spans (the rarer, larger weights counted in
    ``beyond``), and the levels of nf4, fp4 (a median block's absmax) and int8 (a median row's absmax), in the
    weights' own units."""
    import torch

    flat = w.flatten()
    usable = flat[: flat.numel() // _BLOCKSIZE * _BLOCKSIZE].reshape(-1, _BLOCKSIZE)
    block_absmax = float(usable.abs().max(dim=1).values.median())
    row_absmax = float(w.abs().max(dim=1).values.median())
    span = 1.1 * row_absmax
    counts = torch.histc(flat, bins=bins, min=-span, max=span)
    return {
        "name": name,
        "edges": [-span + 2 * span * i / bins for i in range(bins + 1)],
        "counts": [int(c) for c in counts.tolist()],
        "beyond": int((flat.abs() > span).sum()),
        "std": float(flat.std()),
        "tail_ratio": tail_ratio(w),
        "block_absmax": block_absmax,
        "row_absmax": row_absmax,
        "levels": {
            "nf4": sorted(c * block_absmax for c in FORMAT_CODES["nf4"]),
            "fp4": sorted({round(c * block_absmax, 9) for c in FORMAT_CODES["fp4"]}),
            "int8": [k * row_absmax / 127.0 for k in range(-127, 128)],
        },
    }
