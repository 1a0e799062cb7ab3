"""The default dtype when the user names none: the fastest correct one for this machine.

On a CPU with native bfloat16 instructions (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``; Apple's ARM CPUs
report ``bf16``) a model decodes markedly faster in bf16 than in fp32 (the weights are half the bytes and the CPU does
the arithmetic natively: 26.5 against 17.0 tok/s for the embedded model on an AMD EPYC here), at a KL divergence from
fp32 of about 0.001 nats. Elsewhere bf16 is emulated and slower, so fp32 stays the default. On a GPU the model's own
dtype (transformers' ``"auto"``) is kept. The quantization lab's reference stays fp32 (it names its dtype).

:func:`cpu_bf16_flags` reads the CPU's flags; tests replace it (``monkeypatch``) to take either branch.
"""

from __future__ import annotations

import functools

__all__ = ["cpu_bf16_flags", "default_cpu_dtype", "describe_dtype"]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_bf16_flags() -> list[str]:
    """The CPU flags that say it computes bfloat16 natively (empty: none, or not known)."""
    flags = _cpuinfo_flags()
    return [f for f in _BF16_FLAGS if f in flags]


def default_cpu_dtype() -> tuple[str, str]:
    """-> (``"bfloat16"`` or ``"float32"``, why) for a model loaded on this CPU with no dtype named."""
    found = cpu_bf16_flags()
    if found:
        return "bfloat16", f"this CPU computes bf16 natively ({found[0]})"
    return "float32", "this CPU has no native bf16"


def describe_dtype(dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (short names, as the quant presets spell them)."""
    name = str(dtype).replace("torch.", "")
    return {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(name, name)
