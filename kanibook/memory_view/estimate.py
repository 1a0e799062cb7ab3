"""What a model needs in memory, from its config alone: weights under each preset, and the KV cache.

The model is built on PyTorch's ``meta`` device (``accelerate.init_empty_weights``): every parameter has its shape
and no storage, so even a 70B config is counted in a second, with no weights read. Quantized presets follow what
transformers and bitsandbytes do when loading:

- only plain ``nn.Linear`` layers are quantized, except the output head and weights tied to the embeddings
  (transformers' ``get_keys_to_not_convert``) and the model's ``_keep_in_fp32_modules``; embeddings, norms, biases
  and those skipped layers keep the load dtype (the config's ``dtype`` unless told otherwise);
- int8 (LLM.int8): one byte per weight and one fp32 scale per output row (``SCB``);
- 4-bit (nf4 / fp4): two weights per byte, an fp32 ``absmax`` per block of 64 weights and a 16-entry lookup table
  per layer; double quantization (``-dq``) stores the absmax as 8-bit, with an fp32 absmax per 256 of them, a
  256-entry table and an offset.

The KV cache is ``layers x 2 x kv_heads x head_dim x context x batch x bytes`` (full attention on every layer), in
the dtype the activations have: the preset's for fp32/bf16/fp16, the load dtype for quantized presets.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import KanibookError
from ..quant.presets import PRESETS
from .readings import resolve_model, weight_footprint
from .shapes import _Shapes, _shapes, _text_config

__all__ = ["MeasuredWeights", "MemoryEstimate", "PresetEstimate", "estimate_memory"]

BLOCKSIZE_4BIT = 64
NESTED_BLOCKSIZE = 256
_FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "half": "float16", "float16": "float16",
}  # fmt: skip
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class PresetEstimate:
    """The estimate for one preset, in bytes.

    :param quantized_bytes: The packed weights of the quantized linear layers (0 for fp32/bf16/fp16).
    :param scale_bytes: Quantization state: int8 row scales, 4-bit absmax blocks and lookup tables.
    :param kept_bytes: Everything kept in 16/32-bit (all weights for fp32/bf16/fp16) plus buffers.
    :param kv_cache_bytes: The KV cache for the estimate's context length and batch size.
    """

    preset: str
    description: str
    quantized_bytes: int
    scale_bytes: int
    kept_bytes: int
    kv_cache_bytes: int

    @property
    def weights_bytes(self) -> int:
        return self.quantized_bytes + self.scale_bytes + self.kept_bytes

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes


@dataclass(frozen=True)
class MeasuredWeights:
    """A loaded model's weights as measured, for comparison with the estimate.

    :param preset: The preset the loaded model matches (None if it matches none).
    :param footprint_bytes: What the weights really occupy, quantization state included.
    :param transformers_bytes: ``model.get_memory_footprint()`` (parameters and buffers only).
    """

    preset: str | None
    footprint_bytes: int
    transformers_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Weight and KV-cache memory for every preset. Displays itself in notebooks (HTML) and prints as text."""

    model_name: str | None
    parameters: int
    quantizable_parameters: int
    rows: tuple[PresetEstimate, ...]
    context_length: int
    batch_size: int
    kv_layers: int
    kv_heads: int
    head_dim: int
    kv_bytes_per_token: int
    kv_dtype: str
    rest_dtype: str
    kept_summary: str
    method: str
    measured: MeasuredWeights | None = None
    element_id: str | None = field(default=None, compare=False)

    def row(self, preset: str) -> PresetEstimate:
        """The row of one preset (``"nf4"``, ``"int8"``, ...)."""
        for r in self.rows:
            if r.preset == preset:
                return r
        raise KanibookError(f"No estimate for preset {preset!r}: use one of {', '.join(r.preset for r in self.rows)}.")

    def _repr_html_(self) -> str:
        from ..render.memory import estimate_html

        return estimate_html(self, self.element_id)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render.memory import estimate_text

        return {"text/plain": estimate_text(self), "text/html": self._repr_html_()}

    def __str__(self) -> str:
        from ..render.memory import estimate_text

        return estimate_text(self)


# ---- the public function -------------------------------------------------------------------------------------------


def estimate_memory(
    model_or_config: Any,
    context_length: int | None = None,
    batch_size: int = 1,
    *,
    compare: Any = None,
    dtype: Any = None,
    element_id: str | None = None,
) -> MemoryEstimate:
    """Estimate a model's memory for every preset from its config alone, without loading any weights.

    :param model_or_config: A local model folder or a Hugging Face model id (only ``config.json`` is read), a
        ``transformers.PretrainedConfig``, or a loaded engine / model (then it is also measured, as ``compare``).
    :param context_length: Tokens in the KV cache (default: the model's context size).
    :param batch_size: Sequences generated at once (multiplies the KV cache).
    :param compare: A loaded engine or model of the same config, measured and shown beside the estimate.
    :param dtype: The dtype that quantized presets keep their other modules (and KV cache) in; default: the
        compared model's embedding dtype, else the config's ``dtype``, else float32 (what ``from_pretrained`` does).
    :param element_id: An id for the root HTML element (deterministic output).
    """

    if batch_size < 1:
        raise KanibookError(f"batch_size must be at least 1, not {batch_size}.")
    loaded = _loaded(model_or_config)
    if loaded is not None and compare is None:
        compare = model_or_config
    model = name = None
    if compare is not None:
        model, name, _ = resolve_model(compare)
    if loaded is not None:
        config = loaded.config
    else:
        config, name = _config_of(model_or_config, name)
    measured = None
    if model is not None:
        fp = weight_footprint(model)
        measured = MeasuredWeights(fp.preset, fp.total_bytes, fp.transformers_bytes)
    rest = _rest_dtype(dtype, config, model)
    shapes = _shapes(config)
    text = _text_config(config)
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or (getattr(text, "hidden_size", 0) // heads if heads else 0))
    if context_length is None:
        context_length = getattr(_engine_like(compare), "max_context_size", None) or _max_positions(text) or 4096
    if context_length < 1:
        raise KanibookError(f"context_length must be at least 1, not {context_length}.")
    kv_elements = layers * 2 * kv_heads * head_dim * int(context_length) * batch_size
    rows = tuple(_row(p, shapes, _DTYPE_BYTES[rest], kv_elements) for p in PRESETS)
    return MemoryEstimate(
        model_name=name,
        parameters=shapes.parameters,
        quantizable_parameters=shapes.quantizable,
        rows=rows,
        context_length=int(context_length),
        batch_size=batch_size,
        kv_layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        kv_bytes_per_token=layers * 2 * kv_heads * head_dim * batch_size * _DTYPE_BYTES[rest],
        kv_dtype=rest,
        rest_dtype=rest,
        kept_summary=shapes.kept_summary,
        method=shapes.method,
        measured=measured,
        element_id=element_id,
    )


def _row(preset: str, s: _Shapes, rest_bytes: int, kv_elements: int) -> PresetEstimate:
    description = PRESETS[preset]
    if preset in _FLOAT_BYTES:
        size = _FLOAT_BYTES[preset]
        return PresetEstimate(preset, description, 0, 0, s.parameters * size + s.buffer_bytes, kv_elements * size)
    kept = s.kept_elements * rest_bytes + s.buffer_bytes
    kv = kv_elements * rest_bytes
    if preset == "int8":
        return PresetEstimate(preset, description, s.quantizable, sum(4 * rows for _, rows in s.linears), kept, kv)
    packed = scales = 0
    for n, _ in s.linears:
        blocks = math.ceil(n / BLOCKSIZE_4BIT)
        packed += math.ceil(n / 2)
        if preset.endswith("-dq"):  # uint8 absmax + fp32 absmax per 256 blocks + 256-entry table + offset
            scales += blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 4 * 256 + 4
        else:
            scales += 4 * blocks
        scales += 4 * 16  # the 16-entry nf4 / fp4 lookup table of the layer
    return PresetEstimate(preset, description, packed, scales, kept, kv)


# ---- where the config and the dtypes come from ----------------------------------------------------------------------


def _loaded(obj):
    """The loaded model behind an engine / Kani / model, or None for a config or a path."""
    if obj is None or isinstance(obj, (str, os.PathLike)) or type(obj).__name__.endswith("Config"):
        return None

    try:
        model, _, _ = resolve_model(obj)
    except KanibookError:
        return None
    return model


def _engine_like(obj):
    engine = getattr(obj, "engine", None)
    return engine if engine is not None else obj


def _config_of(src: Any, name: str | None):
    if isinstance(src, (str, os.PathLike)):
        from transformers import AutoConfig

        from ..engine._hub import check_model_available, hub_offline

        offline = check_model_available(str(src))
        try:
            with hub_offline(offline):
                config = AutoConfig.from_pretrained(str(src))
        except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear line
            raise KanibookError(
                f"Could not read the config of {str(src)!r} ({type(e).__name__}: {e}); "
                "pass a model folder with a config.json, or a transformers PretrainedConfig."
            ) from None
        local = Path(src).expanduser()
        return config, name or (local.name if local.is_dir() else str(src))
    if hasattr(src, "to_dict") and hasattr(src, "model_type"):
        return src, name or getattr(src, "_name_or_path", None) or src.model_type
    raise KanibookError(
        f"estimate_memory() takes a model folder or id, a transformers config, or a loaded engine, "
        f"not {type(src).__name__}."
    )


def _dtype_name(value: Any) -> str | None:
    if value is None:
        return None
    name = str(value).removeprefix("torch.").lower()
    return _DTYPE_ALIASES.get(name)


def _rest_dtype(dtype: Any, config, model) -> str:
    if dtype is not None:
        name = _dtype_name(dtype)
        if name is None:
            raise KanibookError(f"dtype must be float32, bfloat16 or float16, not {dtype!r}.")
        return name
    if model is not None:
        try:
            name = _dtype_name(model.get_input_embeddings().weight.dtype)
        except (AttributeError, NotImplementedError):
            name = None
        if name:
            return name
    text = _text_config(config)
    for cfg in (config, text):
        name = _dtype_name(getattr(cfg, "dtype", None)) or _dtype_name(cfg.to_dict().get("torch_dtype"))
        if name:
            return name
    return "float32"


def _max_positions(text) -> int | None:
    for key in ("model_max_len", "max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and 0 < value < 1 << 40:
            return value
    return None


# ---- the tensors, from the config ----------------------------------------------------------------------------------
