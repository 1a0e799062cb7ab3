"""GPU-marked memory tests: CUDA allocator readings, bitsandbytes on CUDA, estimates there, per-turn CUDA figures.

Every test here is marked ``gpu``: tests/conftest.py skips them where ``torch.cuda.is_available()`` is False.

Facts from torch.cuda relied on (torch 2.x, ``torch/cuda/memory.py``): ``memory_allocated`` / ``max_memory_allocated``
/ ``memory_reserved`` read the caching allocator's ``allocated_bytes.all.current`` / ``.peak`` /
``reserved_bytes.all.current`` for this process, and are 0 before CUDA is initialised; ``reset_peak_memory_stats``
sets the peak to the current allocation; a freed tensor's block stays reserved until ``empty_cache()`` releases it;
``get_device_properties(i).total_memory`` is the device's capacity.
"""

from __future__ import annotations

import gc
import importlib

import pytest
from kani import ChatMessage

import kanibook
from kanibook.render import safe

kmem = importlib.import_module("kanibook.memory_view")

pytestmark = pytest.mark.gpu

MESSAGES = [ChatMessage.user("Write a long story about a dragon who learns to bake bread.")]
MIB = 2**20


def _device(report, index: int):
    [device] = [d for d in report.devices if d.index == index]
    return device


@pytest.fixture
def cuda_index():
    import torch

    torch.cuda.init()
    index = torch.cuda.current_device()
    gc.collect()
    torch.cuda.synchronize(index)
    torch.cuda.empty_cache()
    return index


def test_cuda_readings_follow_a_tensor_you_allocate(cuda_index):
    import torch

    torch.cuda.reset_peak_memory_stats(cuda_index)
    before = _device(kanibook.memory(), cuda_index)
    size = 256 * MIB  # a multiple of the allocator's 2 MiB rounding for large blocks
    x = torch.ones(size, dtype=torch.uint8, device=f"cuda:{cuda_index}")
    torch.cuda.synchronize(cuda_index)
    report = kanibook.memory()
    during = _device(report, cuda_index)
    assert report.cuda_note is None
    assert size <= during.allocated - before.allocated < size + 4 * MIB
    assert during.reserved >= during.allocated
    assert during.peak_allocated >= during.allocated
    props = torch.cuda.get_device_properties(cuda_index)
    assert during.total == props.total_memory > during.reserved
    assert during.name == props.name == torch.cuda.get_device_name(cuda_index)
    sample = kmem.MemoryReader(f"cuda:{cuda_index}").read()
    assert sample.cuda_allocated == torch.cuda.memory_allocated(cuda_index) == during.allocated
    assert sample.cuda_reserved == torch.cuda.memory_reserved(cuda_index)

    del x
    freed = _device(kanibook.memory(), cuda_index)
    assert abs(freed.allocated - before.allocated) < MIB
    assert freed.reserved == during.reserved  # the caching allocator keeps the freed block
    assert freed.peak_allocated >= before.allocated + size  # the peak remembers it
    torch.cuda.empty_cache()
    released = _device(kanibook.memory(), cuda_index)
    assert released.reserved <= during.reserved - size

    html_out, text = report._repr_html_(), str(report)
    assert f"cuda:{cuda_index}" in html_out and safe.text(props.name) in html_out
    from kanibook.render.memory import format_bytes

    assert format_bytes(during.allocated) in html_out and format_bytes(during.allocated) in text


@pytest.mark.parametrize("preset", ["nf4", "int8", "bf16"])
def test_demo_model_on_cuda_with_bitsandbytes_matches_the_estimate(preset, demo_model_dir, cuda_index):
    import torch

    est = kanibook.estimate_memory(demo_model_dir)  # from the config alone, before loading
    allocated_before = torch.cuda.memory_allocated(cuda_index)
    engine = kanibook.load(demo_model_dir, quant=preset)  # kani puts it on the GPU (device_map="auto")
    try:
        model = engine.model
        assert model.device.type == "cuda" and str(engine.device).startswith("cuda")
        fp = kmem.weight_footprint(model)
        assert fp.preset == preset
        assert all(g.device.startswith("cuda") for g in fp.groups), fp.groups
        if preset in ("nf4", "int8"):
            kinds = {type(p).__name__ for p in model.parameters()}
            assert ("Params4bit" if preset == "nf4" else "Int8Params") in kinds
            assert fp.storage_overhead_bytes > 0
        footprint = model.get_memory_footprint()
        estimate = est.row(preset).weights_bytes
        assert abs(estimate - footprint) / footprint < 0.10, (preset, estimate, footprint)
        compared = kanibook.estimate_memory(demo_model_dir, compare=engine)
        assert compared.measured.preset == preset
        assert compared.row(preset).weights_bytes == compared.measured.footprint_bytes
        # the weights really sit in the CUDA allocator
        held = torch.cuda.memory_allocated(cuda_index) - allocated_before
        assert held >= 0.95 * fp.total_bytes, (held, fp.total_bytes)
        assert _device(kanibook.memory(engine), cuda_index).allocated >= held
    finally:
        del engine
        gc.collect()
        torch.cuda.empty_cache()


def test_streamed_turn_on_gpu_reports_cuda_memory(demo_model_dir, run_async, no_leaked_threads, cuda_index):
    import torch

    from kanibook.widgets.memory_gauge import MemoryGauge

    engine = kanibook.load(demo_model_dir, quant="bf16")
    try:
        assert str(engine.device).startswith("cuda")
        weights = kmem.weight_footprint(engine.model).total_bytes

        async def scenario(engine):
            gauge = MemoryGauge(engine, interval=0.05)
            assert gauge.kind == "cuda"
            completion = None
            async with gauge:
                async for item in engine.stream(MESSAGES, max_new_tokens=48, min_new_tokens=48, do_sample=False):
                    if not isinstance(item, str):
                        completion = item
            return gauge, completion

        gauge, completion = run_async(scenario(engine))
        stats = completion.stats
        assert stats.memory_kind == "cuda" and engine.last_stats.memory_kind == "cuda"
        assert stats.completion_tokens == 48
        total = torch.cuda.get_device_properties(cuda_index).total_memory
        assert weights <= stats.peak_memory_bytes < total  # the peak includes the weights (reset sets it to them)
        assert gauge.samples >= 3 and not gauge.running
        assert gauge.last.cuda_allocated >= weights and gauge.peak >= weights
        assert f"cuda:{cuda_index} allocated" in gauge._label.value

        tl = kmem.memory_timeline(engine, MESSAGES, max_new_tokens=32, min_new_tokens=32, do_sample=False)
        assert tl.kind == "cuda" and tl.completion_tokens == 32
        allocated = tl.series()["CUDA allocated"]
        assert min(allocated) >= weights and len(allocated) >= 5
        assert all(r >= a for r, a in zip(tl.series()["CUDA reserved"], allocated))
        assert 0 <= tl.samples[0].t < tl.first_token_s < tl.end_s <= tl.samples[-1].t
    finally:
        del engine
        gc.collect()
        torch.cuda.empty_cache()
