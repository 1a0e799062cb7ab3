"""With no dtype named, a model on a CPU loads in bf16 where the CPU computes it natively and in fp32 elsewhere; the
load line says which. The CPU's flags are faked here to take both branches on any machine; the lab's reference and an
explicit quant= are untouched."""

from __future__ import annotations

import torch

import kanibook
from kanibook.engine import _dtype


def _fake_flags(monkeypatch, flags: list[str]) -> None:
    monkeypatch.setattr(_dtype, "cpu_bf16_flags", lambda: list(flags))


def test_the_cpu_flags_are_read_from_proc_cpuinfo():
    found = _dtype.cpu_bf16_flags()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        assert found == []
        return
    assert all(f in text.split() for f in found)
    assert ("avx512_bf16" in text.split()) == ("avx512_bf16" in found)


def test_native_bf16_loads_bf16_and_says_so(monkeypatch, demo_model_dir):
    _fake_flags(monkeypatch, ["avx512_bf16"])
    engine = kanibook.load(demo_model_dir, device="cpu")
    assert engine.model.dtype == torch.bfloat16
    assert "bf16, the default: this CPU computes bf16 natively (avx512_bf16)" in engine.load_line


def test_without_native_bf16_loads_fp32_and_says_so(monkeypatch, demo_model_dir):
    _fake_flags(monkeypatch, [])
    engine = kanibook.load(demo_model_dir, device="cpu")
    assert engine.model.dtype == torch.float32
    assert "fp32, the default: this CPU has no native bf16" in engine.load_line


def test_a_named_dtype_wins(monkeypatch, demo_model_dir):
    _fake_flags(monkeypatch, ["avx512_bf16"])
    engine = kanibook.load(demo_model_dir, quant="fp32")
    assert engine.model.dtype == torch.float32 and "the default" not in engine.load_line
    engine = kanibook.load(demo_model_dir, model_load_kwargs={"dtype": torch.float32})
    assert engine.model.dtype == torch.float32


def test_the_labs_reference_stays_fp32(monkeypatch):
    from kanibook.quant.settings import reference_preset

    _fake_flags(monkeypatch, ["avx512_bf16"])
    assert reference_preset("cpu") == "fp32"
