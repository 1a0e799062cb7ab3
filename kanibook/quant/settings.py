"""What the quantization lab compares: settings (a preset, or a user's ``BitsAndBytesConfig`` with a label).

The first setting is always the **reference**, in full precision: fp32 on a CPU, bf16 on a GPU (fp32 weights of a
large model rarely fit a GPU, and bf16 is what GPU inference uses). Every other setting is measured against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError
from .presets import PRESETS

__all__ = ["Setting", "default_settings", "reference_preset", "resolve_settings", "setting_names"]

#: The settings of a default comparison, after the reference (fp16 only on a GPU: a CPU computes it slowly; fp32
#: only on a CPU: on a GPU the reference is bf16, and a large model's fp32 weights rarely fit).
_DEFAULT_ORDER = ("fp32", "bf16", "fp16", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq")
_BNB = ("int8", "nf4", "nf4-dq", "fp4", "fp4-dq")


@dataclass(frozen=True)
class Setting:
    """One way to load the model.

    :param label: The name shown in the report (unique within a comparison).
    :param quant: What ``kanibook.load(quant=...)`` takes: a preset name or a ``BitsAndBytesConfig``.
    :param preset: The preset whose memory estimate applies (a config's format: ``"nf4-dq"``, ``"int8"``, ...).
    :param description: One line on what the setting does.
    :param reference: True for the full-precision setting the others are compared with.
    """

    label: str
    quant: Any
    preset: str | None
    description: str
    reference: bool = False

    @property
    def needs_bitsandbytes(self) -> bool:
        from .native import is_native

        return not is_native(self) and (self.preset in _BNB or not isinstance(self.quant, str))


def setting_names() -> tuple[str, ...]:
    """The preset names a comparison accepts."""
    return tuple(PRESETS)


def reference_preset(device: str) -> str:
    """``"bf16"`` on a GPU, ``"fp32"`` elsewhere."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def default_settings(device: str) -> list[str]:
    """Every preset this kind of machine runs, reference first (bitsandbytes ones are tried, and reported if absent).

    :param device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    """
    ref = reference_preset(device)
    gpu = str(device).startswith("cuda")
    rest = [p for p in _DEFAULT_ORDER if p != ref and p != ("fp32" if gpu else "fp16")]
    return [ref, *rest]


def resolve_settings(settings: Any, device: str) -> list[Setting]:
    """Turn what the user passed into settings, the reference first (added when missing).

    :param settings: None (every setting the machine runs); a comma-separated string or a list of preset names;
        ``BitsAndBytesConfig`` objects, ``(label, config)`` pairs, or a ``{label: config or preset}`` dict.
    :param device: The device the comparison runs on (decides the reference).
    :raises KanibookError: for an unknown preset name or a duplicate label, naming the valid ones.
    """
    if settings is None:
        settings = default_settings(device)
    if isinstance(settings, str):
        settings = [s for s in (part.strip() for part in settings.split(",")) if s]
    items = list(settings.items()) if isinstance(settings, dict) else list(settings)
    if not items:
        raise KanibookError(f"No settings to compare: pass preset names ({', '.join(PRESETS)}) or leave settings=None.")
    ref = reference_preset(device)
    resolved = [_one(item, ref) for item in items]
    labels = [s.label for s in resolved]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate is not None:
        raise KanibookError(f"The setting {duplicate!r} is listed twice: give each setting once (or its own label).")
    if not any(s.reference for s in resolved):
        resolved.insert(0, _one(ref, ref))
    resolved.sort(key=lambda s: not s.reference)  # the reference loads first: the others are compared with it
    return resolved


def _one(item: Any, ref: str) -> Setting:
    if isinstance(item, str):
        return _preset_setting(item, item, ref)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        label, quant = item
        if isinstance(quant, str):
            setting = _preset_setting(quant, label, ref)
            return Setting(label, setting.quant, setting.preset, setting.description, setting.reference and label == quant)
        return _config_setting(quant, label)
    return _config_setting(item, None)


def _preset_setting(name: str, label: str, ref: str) -> Setting:
    from .native import NATIVE_NAMES, NativeGGUF

    key = name.strip().lower()
    if key in NATIVE_NAMES:  # the model's own GGUF file run by llama.cpp; the lab fills in the file
        return Setting(label if label != name else "gguf (llama.cpp)", NativeGGUF(None), None,
                       "the model's own GGUF file, run natively by llama.cpp")  # fmt: skip
    if key not in PRESETS:
        raise KanibookError(
            f"Unknown setting {name!r}: use one of {', '.join(PRESETS)}, gguf, or a BitsAndBytesConfig."
        )
    description = PRESETS[key] + (" (the reference)" if key == ref else "")
    return Setting(label if label != name else key, key, key, description, reference=key == ref)


def _config_setting(config: Any, label: str | None) -> Setting:
    if type(config).__name__ != "BitsAndBytesConfig":
        raise KanibookError(
            f"A setting must be a preset name ({', '.join(PRESETS)}), a BitsAndBytesConfig or a (label, config) "
            f"pair, not {type(config).__name__}."
        )
    preset = config_preset(config)
    return Setting(label or f"custom {preset or 'bnb'}", config, preset, describe_config(config))


def config_preset(config: Any) -> str | None:
    """The preset whose memory estimate matches a ``BitsAndBytesConfig`` (the compute dtype does not change it)."""
    if getattr(config, "load_in_8bit", False):
        return "int8"
    if getattr(config, "load_in_4bit", False):
        kind = getattr(config, "bnb_4bit_quant_type", "fp4")
        return f"{kind}-dq" if getattr(config, "bnb_4bit_use_double_quant", False) else kind
    return None


def describe_config(config: Any) -> str:
    """One line on a ``BitsAndBytesConfig``: format, double quantization, compute dtype."""
    preset = config_preset(config)
    if preset == "int8":
        return f"BitsAndBytesConfig: LLM.int8, outlier threshold {getattr(config, 'llm_int8_threshold', 6.0)}"
    if preset is None:
        return "BitsAndBytesConfig (no 8-bit or 4-bit loading)"
    dtype = str(getattr(config, "bnb_4bit_compute_dtype", None)).replace("torch.", "")
    dq = ", double quantization" if preset.endswith("-dq") else ""
    return f"BitsAndBytesConfig: 4-bit {preset.split('-')[0]}{dq}, compute in {dtype}"
