"""Quantization presets: a short name -> what ``from_pretrained`` needs (a ``BitsAndBytesConfig`` or a dtype)."""

from __future__ import annotations

from typing import Any

from ..exceptions import KanibookError, require

__all__ = ["PRESETS", "load_kwargs_for"]

#: Preset name -> description. ``fp32``/``bf16``/``fp16`` are plain dtypes; the others are bitsandbytes.
PRESETS: dict[str, str] = {
    "fp32": "32-bit floats, the reference",
    "bf16": "bfloat16 weights",
    "fp16": "float16 weights",
    "int8": "bitsandbytes LLM.int8 (8-bit weights, outliers in 16-bit)",
    "nf4": "bitsandbytes 4-bit NormalFloat",
    "nf4-dq": "bitsandbytes 4-bit NormalFloat with double quantization of the scales",
    "fp4": "bitsandbytes 4-bit float",
    "fp4-dq": "bitsandbytes 4-bit float with double quantization of the scales",
}

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def load_kwargs_for(quant: Any, compute_dtype: str | None = None) -> dict[str, Any]:
    """The ``model_load_kwargs`` entries for a preset name or a ``BitsAndBytesConfig``.

    :param quant: A name from :data:`PRESETS`, a ``transformers.BitsAndBytesConfig``, or None.
    :param compute_dtype: The dtype 4-bit layers compute in (``"bfloat16"`` by default, ``"float32"`` is exact).
    """
    if quant is None:
        return {}
    if not isinstance(quant, str):
        if type(quant).__name__ != "BitsAndBytesConfig":
            raise KanibookError(
                f"quant must be a preset name ({', '.join(PRESETS)}) or a BitsAndBytesConfig, not {type(quant).__name__}."
            )
        require("bitsandbytes", "quant", "Loading a bitsandbytes-quantized model")
        return {"quantization_config": quant}
    name = quant.strip().lower()
    if name not in PRESETS:
        raise KanibookError(f"Unknown quant preset {quant!r}: use one of {', '.join(PRESETS)}.")
    import torch

    if name in _DTYPES:
        return {"dtype": getattr(torch, _DTYPES[name])}
    require("bitsandbytes", "quant", f"The {name!r} preset")
    from transformers import BitsAndBytesConfig

    if name == "int8":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    kind, _, suffix = name.partition("-")
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=kind,
            bnb_4bit_use_double_quant=suffix == "dq",
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype or "bfloat16"),
        )
    }
