"""How many elements a model's tensors hold, as the memory estimate needs them: the linear layers bitsandbytes would
quantize (and their output rows), everything else that keeps the load dtype, counted on PyTorch's ``meta`` device
(or from the config's numbers where a model cannot be built there). Used by :mod:`kanibook.memory_view.estimate`."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

from ..exceptions import KanibookError


@dataclass
class _Shapes:
    """What the presets need to know about a model's tensors."""

    linears: list[tuple[int, int]]  # (weights, output rows) of each linear layer bitsandbytes would quantize
    kept_elements: int  # every other parameter element (embeddings, norms, biases, skipped layers)
    buffer_bytes: int
    kept_summary: str
    method: str

    @property
    def quantizable(self) -> int:
        return sum(n for n, _ in self.linears)

    @property
    def parameters(self) -> int:
        return self.quantizable + self.kept_elements


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    if getter is not None:
        try:
            return getter(decoder=True)
        except TypeError:
            return getter()
    return getattr(config, "text_config", None) or config


def _shapes(config) -> _Shapes:
    config = copy.deepcopy(config)
    if getattr(config, "quantization_config", None) is not None:
        config.quantization_config = None  # a prequantized checkpoint's settings: count the plain architecture
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            pass
    try:
        model = _meta_model(config)
    except Exception as e:  # noqa: BLE001 - fall back on the config's numbers
        return _shapes_from_numbers(_text_config(config), reason=f"transformers cannot build it: {type(e).__name__}")
    return _shapes_from_meta(model)


def _meta_model(config):
    import transformers
    from accelerate import init_empty_weights

    candidates = [transformers.AutoModelForCausalLM, getattr(transformers, "AutoModelForImageTextToText", None)]
    candidates += [getattr(transformers, a, None) for a in (getattr(config, "architectures", None) or [])]
    candidates.append(transformers.AutoModel)
    error: Exception | None = None
    with init_empty_weights(include_buffers=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in candidates:
            if cls is None:
                continue
            try:
                factory = getattr(cls, "from_config", None) or cls._from_config
                return factory(config)
            except Exception as e:  # noqa: BLE001 - try the next class
                error = e
    raise error or KanibookError("no model class")


def _not_converted(model) -> list[str]:
    """The module names transformers keeps out of bitsandbytes conversion."""
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return list(get_keys_to_not_convert(model)) + keep
    except Exception:  # noqa: BLE001 - older/newer transformers: the output head and the last module
        names = [n for n, m in model.named_modules() if m is model.get_output_embeddings()]
        last = [n for n, _ in model.named_parameters()][-1:]
        return names + [n.removesuffix(".weight") for n in last] + keep


def _converts(name: str, skip: list[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return should_convert_module(name, skip)
    except ImportError:
        return not any(name == k or name.startswith(k + ".") or name.endswith(k) for k in skip)


def _shapes_from_meta(model) -> _Shapes:
    import torch

    skip = _not_converted(model)
    linears: list[tuple[int, int]] = []
    kept = 0
    kept_by_kind: dict[str, list[str]] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        is_linear = type(module) is torch.nn.Linear or type(module).__name__ == "Conv1D"
        convert = is_linear and _converts(name, skip)
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if convert and pname == "weight":
                rows = p.shape[0] if type(module) is torch.nn.Linear else p.shape[-1]
                linears.append((p.numel(), int(rows)))
                continue
            kept += p.numel()
            kind = "bias" if convert else type(module).__name__
            kept_by_kind.setdefault(kind, []).append(name)
    tied = bool(getattr(_text_config(model.config), "tie_word_embeddings", False))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return _Shapes(
        linears, kept, buffers, _summary(kept_by_kind, tied), "a model on the meta device, no weights loaded"
    )


def _summary(kept_by_kind: dict[str, list[str]], tied: bool) -> str:
    parts = []
    for kind, names in sorted(kept_by_kind.items(), key=lambda kv: -len(kv[1])):
        label = "biases of quantized layers" if kind == "bias" else kind
        parts.append(f"{label} ({names[0]})" if len(names) == 1 else f"{len(names)} x {label}")
    if tied:
        parts.append("the output head (tied to the embeddings)")
    return ", ".join(parts) or "nothing else"


def _shapes_from_numbers(text, reason: str) -> _Shapes:
    """A Llama-style decoder counted from the config's numbers, when the model class cannot be built."""
    try:
        h, layers, inter = int(text.hidden_size), int(text.num_hidden_layers), int(text.intermediate_size)
        heads, vocab = int(text.num_attention_heads), int(text.vocab_size)
    except (AttributeError, TypeError) as e:
        raise KanibookError(
            f"Cannot build this model type from its config ({reason}) and it lacks the usual sizes ({e}): "
            "install the model's transformers support, or estimate from a supported config."
        ) from None
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    hd = int(getattr(text, "head_dim", None) or h // heads)
    per_layer = [(h * heads * hd, heads * hd), (h * kv * hd, kv * hd), (h * kv * hd, kv * hd), (heads * hd * h, h)]
    per_layer += [(h * inter, inter), (h * inter, inter), (inter * h, h)]
    tied = bool(getattr(text, "tie_word_embeddings", False))
    kept = vocab * h * (1 if tied else 2) + (2 * layers + 1) * h
    summary = (
        "the embeddings, " + ("the output head (tied)" if tied else "the output head") + f", {2 * layers + 1} norms"
    )
    return _Shapes(per_layer * layers, kept, 0, summary, f"the config's sizes, Llama-style layout ({reason})")
