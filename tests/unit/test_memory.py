"""kanibook.memory(): readings on a CPU, the report, the live gauge and the timeline of one generation."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib
import re
import subprocess
import sys

import pytest
from _html import parse_html
from kani import ChatMessage

import kanibook
from kanibook.exceptions import KanibookError
from kanibook.render import memory as render
from kanibook.render import safe

kmem = importlib.import_module("kanibook.memory_view")
MESSAGES = [ChatMessage.user("Write a long story about a dragon who learns to bake bread.")]

# what the memory views may build in a browser: layout only, nothing active
_ALLOWED_TAGS = {"div", "span", "table", "tr", "th", "td", "img"}


def _run_fresh(code: str) -> str:
    """Run ``code`` in a fresh Python process (nothing imported yet); return its stripped output."""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def assert_inert(html_out: str, hostile: str) -> None:
    tags = parse_html(html_out).tags
    assert {t for t, _ in tags} <= _ALLOWED_TAGS, tags
    for tag, attrs in tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs
    for bad in ("\x00", "\u202e", "\u2066", "\x1b", "\x07"):
        assert bad not in html_out
    if any(c in hostile for c in "<>\"'"):
        assert hostile not in html_out
    assert safe.text(hostile) in html_out  # the string is there, as text


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---- imports and readings --------------------------------------------------------------------------------------


def test_importing_the_memory_views_imports_no_torch():
    code = (
        "import sys, kanibook.memory_view, kanibook.render.memory, kanibook.widgets.memory_gauge\n"
        "devices, note = kanibook.memory_view.cuda_memory()\n"
        "assert devices == [] and note is None, (devices, note)\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'matplotlib', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(kanibook.memory_view.memory().process.rss > 0)\n"
        "assert 'torch' not in sys.modules  # a reading without a model does not import torch either\n"
    )
    assert _run_fresh(code) == "True"


def test_kanibook_memory_is_callable_even_after_the_module_was_imported():
    code = (
        "import kanibook.memory_view, kanibook\n"
        "from kanibook.memory_view import MemoryReport\n"
        "report = kanibook.memory(element_id='x')\n"
        "assert isinstance(report, MemoryReport), type(report)\n"
        "assert isinstance(kanibook.estimate_memory, type(lambda: 0))\n"
        "print('ok')\n"
    )
    assert _run_fresh(code) == "ok"
    assert isinstance(kanibook.memory(), kmem.MemoryReport)


def test_process_memory_is_positive_and_grows_with_a_large_tensor():
    before = kmem.process_memory()
    assert before.rss > 0 and before.system_total >= before.system_available > 0
    assert before.peak_rss is None or before.peak_rss >= before.rss * 0.5
    reader = kmem.MemoryReader("cpu")
    assert reader.kind == "process" and reader.total() == before.system_total
    # in a fresh process: here, earlier tests leave freed pages that a new tensor would reuse without growing RSS
    code = (
        "import torch, kanibook.memory_view as m\n"
        "before = m.process_memory().rss\n"
        "reader = m.MemoryReader('cpu')\n"
        "big = torch.ones(64 * 2**20, dtype=torch.float32)\n"  # 256 MiB, every page touched
        "sample = reader.read()\n"
        "print(m.process_memory().rss - before, sample.rss - before, sample.cuda_allocated, sample.cuda_reserved)\n"
    )
    stdout = _run_fresh(code)
    grown, sampled, cuda_allocated, cuda_reserved = stdout.split()
    assert int(grown) > 200 * 2**20 and int(sampled) > 200 * 2**20, stdout
    assert cuda_allocated == cuda_reserved == "None"


def test_the_peak_rss_is_never_below_the_current_rss():
    """While another thread grows and frees memory (as a model load or a generation does), every reading's peak is
    at least its current RSS (getrusage's ru_maxrss alone lagged and once read 1 MB below it), and the peak is the
    high-water mark: after the memory is freed it stays at least as high as the largest RSS seen."""
    code = (
        "import threading, kanibook.memory_view as m\n"
        "stop = threading.Event()\n"
        "def churn():\n"
        "    while not stop.is_set():\n"
        "        blocks = [bytearray(2**20) for _ in range(64)]\n"  # 64 MiB, pages touched (zeroed)
        "        del blocks\n"
        "t = threading.Thread(target=churn); t.start()\n"
        "readings = [m.process_memory() for _ in range(3000)]\n"
        "stop.set(); t.join()\n"
        "after = m.process_memory()\n"
        "below = [(r.rss, r.peak_rss) for r in readings if r.peak_rss is None or r.peak_rss < r.rss]\n"
        "print(len(below), max(r.rss for r in readings) <= after.peak_rss, below[:3])\n"
    )
    stdout = _run_fresh(code)
    assert stdout.split()[:2] == ["0", "True"], stdout


def test_cuda_readings_are_absent_without_cuda():
    import torch

    devices, note = kmem.cuda_memory()
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: see test_memory_gpu.py")
    assert devices == [] and note is None
    report = kanibook.memory()
    assert report.devices == () and "CUDA device" not in report._repr_html_()


def test_weight_footprint_of_the_demo_engine_is_its_parameters_bytes(demo_engine):
    model = demo_engine.model
    fp = kmem.weight_footprint(model)
    assert fp.parameter_bytes == _param_bytes(model)
    assert fp.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert fp.total_bytes == fp.transformers_bytes == model.get_memory_footprint()
    assert fp.storage_overhead_bytes == 0
    by_dtype: dict[str, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        key = str(t.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + t.numel() * t.element_size()
    assert {g.dtype: g.bytes for g in fp.groups} == by_dtype
    assert sum(g.bytes for g in fp.groups) == fp.total_bytes
    assert fp.preset == {"torch.bfloat16": "bf16", "torch.float32": "fp32"}[str(model.dtype)]  # the default dtype
    assert {g.device for g in fp.groups} == {str(t.device) for t in [*model.parameters(), *model.buffers()]}


def test_memory_of_an_engine_a_kani_and_a_model_agree(demo_engine):
    from kani import Kani

    a = kanibook.memory(demo_engine)
    b = kanibook.memory(Kani(demo_engine))
    c = kanibook.memory(demo_engine.model)
    assert a.weights == b.weights == c.weights
    assert a.model_name == str(demo_engine.model_id)
    assert a.process.rss > 0  # (not necessarily above the weights: safetensors maps them from disk lazily)
    with pytest.raises(KanibookError, match="kanibook engine"):
        kanibook.memory(42)


def test_memory_without_a_model_never_loads_one():
    from kanibook.conversation import session as ksession

    previous = ksession.set_current_session(None)
    try:
        report = kanibook.memory()
        assert report.weights is None and report.model_name is None
        assert report.process.rss > 0
        assert not ksession.current_session().loaded  # reading memory did not load the demo model
        assert "pass an engine" in report._repr_html_()
    finally:
        fresh = ksession.set_current_session(previous)
        if fresh is not None:
            fresh.close()


def test_memory_uses_the_current_sessions_engine(demo_engine):
    from kanibook.conversation import session as ksession

    session = ksession.ChatSession(demo_engine)
    previous = ksession.set_current_session(session)
    try:
        report = kanibook.memory()
        assert report.weights is not None
        assert report.weights.parameter_bytes == _param_bytes(demo_engine.model)
    finally:
        ksession.set_current_session(previous)
        session.close()


# ---- the report's HTML and text ----------------------------------------------------------------------------------


def test_format_bytes():
    cases = {
        0: "0 B", 999: "999 B", 1000: "1.00 kB", 46_080: "46.1 kB", 538_060_288: "538 MB",
        166_471_168: "166 MB", 1_234_567_890: "1.23 GB", 85_000_000_000: "85.0 GB", 999_600: "1.00 MB",
    }  # fmt: skip
    assert {n: render.format_bytes(n) for n in cases} == cases
    assert render.format_bytes(None) == "n/a"
    assert render.format_count(134_515_008) == "134.5M" and render.format_count(7_241_732_096) == "7.24B"


def _report(name: str = "org/model", device_name: str = "NVIDIA H100 80GB HBM3", dtype: str = "bfloat16"):
    return kmem.MemoryReport(
        devices=(kmem.DeviceMemory(0, device_name, 1_234_567_890, 2_000_000_000, 3_210_000_000, 85_000_000_000),),
        process=kmem.ProcessMemory(
            rss=812_000_000, peak_rss=830_000_000, system_total=25_300_000_000, system_available=22_400_000_000
        ),
        weights=kmem.WeightFootprint(
            groups=(
                kmem.WeightGroup(dtype, "cuda:0", 272, 134_515_008, 269_030_016),
                kmem.WeightGroup("float32", "cuda:0", 2, 64, 256),
            ),
            parameter_bytes=269_030_016,
            buffer_bytes=256,
            storage_overhead_bytes=0,
            preset="bf16",
        ),
        model_name=name,
        element_id="mem-1",
    )


def test_report_shows_the_numbers_formatted():
    report = _report()
    html_out, text = report._repr_html_(), str(report)
    bundle = report._repr_mimebundle_()
    assert bundle == {"text/plain": text, "text/html": html_out}
    for figure in ("1.23 GB", "2.00 GB", "3.21 GB", "85.0 GB", "812 MB", "830 MB", "22.4 GB", "25.3 GB", "269 MB"):
        assert figure in html_out and figure in text, figure
    assert 'title="1,234,567,890 bytes"' in html_out and 'title="269,030,016 bytes"' in html_out
    assert "NVIDIA H100 80GB HBM3" in text and "bfloat16" in html_out and "(bf16)" in text
    assert 'id="mem-1"' in html_out and html_out == _report()._repr_html_()  # deterministic
    assert "100.0%" in html_out  # the bf16 group's share (the 256-byte buffer rounds away)
    # each bar says on the page what it shows (its header and a label beside it), not only in a hover title
    assert "<th" in html_out and ">RSS / system total</th>" in html_out and ">reserved / total</th>" in html_out
    labels = re.findall(r'<span class="kb-memory-bar-label"[^>]*>([^<]*)</span>', html_out)
    assert [re.sub(r"^[0-9.]+% ", "", label) for label in labels] == ["of the device, reserved",
                                                                      "of the system total, resident"]  # fmt: skip
    assert all(re.match(r"[0-9]+\.[0-9]% ", label) for label in labels)



def test_report_explains_weights_not_yet_resident():
    on_cpu = kmem.WeightFootprint((kmem.WeightGroup("float32", "cpu", 1, 10**8, 4 * 10**8),), 4 * 10**8, 0, 0, "fp32")
    low = kmem.ProcessMemory(rss=10**8, peak_rss=None, system_total=10**10, system_available=10**9)
    high = dataclasses.replace(low, rss=10**9)
    shown = kmem.MemoryReport((), low, on_cpu, "m")
    assert "memory-mapped" in shown._repr_html_() and "memory-mapped" in str(shown)
    assert "memory-mapped" not in kmem.MemoryReport((), high, on_cpu, "m")._repr_html_()
    assert "n/a" in str(shown)  # no peak RSS on this platform: said so, not invented


def test_live_report_of_the_demo_engine_shows_its_weights(demo_engine):
    report = kanibook.memory(demo_engine)
    html_out, text = report._repr_html_(), str(report)
    total = render.format_bytes(report.weights.total_bytes)
    dtype = str(demo_engine.model.dtype).removeprefix("torch.")  # the default: bf16 on a CPU with native bf16
    assert total == {"float32": "538 MB", "bfloat16": "269 MB"}[dtype]
    assert total in html_out and total in text and dtype in html_out
    assert render.format_bytes(report.process.rss) in text


def test_report_escapes_hostile_names(hostile):
    report = _report(name=hostile, device_name=hostile, dtype=hostile)
    report = kmem.MemoryReport(report.devices, report.process, report.weights, hostile, hostile, element_id=hostile)
    html_out = report._repr_html_()
    assert_inert(html_out, hostile)
    text = str(report)
    assert "\x00" not in text and "\u202e" not in text and safe.clean_chars(hostile) in text


# ---- the live gauge ------------------------------------------------------------------------------------------------


def _fresh_pages(size: int):
    """Memory that surely raises RSS: new anonymous pages, each touched (a malloc'd tensor may reuse freed pages)."""
    import mmap

    pages = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        pages[offset] = 1
    return pages


def test_gauge_updates_while_a_reply_streams_and_stops_cleanly(demo_engine, run_async, no_leaked_threads):
    from kanibook.widgets.memory_gauge import MemoryGauge

    on_gpu = str(demo_engine.device).startswith("cuda")
    assert MemoryGauge(demo_engine).kind == ("cuda" if on_gpu else "process")  # it watches the engine's device

    async def scenario():
        gauge = MemoryGauge(device="cpu", interval=0.05)  # the process: where this test allocates
        samples0, updates0 = gauge.samples, gauge.updates
        baseline = gauge.last.rss
        seen_during: list[int] = []
        async with gauge:
            assert gauge.running
            pieces, held = 0, []
            async for item in demo_engine.stream(MESSAGES, max_new_tokens=40, min_new_tokens=40, do_sample=False):
                pieces += isinstance(item, str)
                seen_during.append(gauge.samples)
                if pieces in (10, 30):  # memory rises, then falls, mid-reply: the gauge shows both as it goes on
                    if pieces == 10:
                        held.append(_fresh_pages(192 * 2**20))
                    else:
                        held.clear()
                    taken = gauge.samples  # (tokens may arrive in a burst on a busy machine: wait for one reading)
                    while gauge.samples < taken + 2:
                        await asyncio.sleep(0.01)
        others = [t for t in asyncio.all_tasks() if t.get_name().startswith("kanibook-")]
        return gauge, samples0, updates0, baseline, seen_during, others, pieces

    gauge, samples0, updates0, baseline, seen_during, others, pieces = run_async(scenario())
    assert pieces >= 30
    assert not gauge.running and others == []  # the sampling task has ended
    assert gauge.samples - samples0 >= 5, gauge.samples
    assert gauge.updates - updates0 >= 2, gauge.updates  # the rise and the fall (RSS may be steady otherwise)
    assert seen_during[-1] > seen_during[0]  # samples were taken while tokens were still arriving
    assert gauge.peak - baseline > 150 * 2**20  # the allocation made mid-reply was seen
    assert "process RSS" in gauge._label.value and "peak" in gauge._label.value
    assert gauge._bar.value == pytest.approx(gauge.last.rss / 1e6, abs=0.06)
    samples_after = gauge.samples
    run_async(asyncio.sleep(0.2))
    assert gauge.samples == samples_after  # nothing samples after the stop


def test_gauge_start_stop_from_loop_code_and_without_a_loop(run_async):
    from kanibook.widgets.memory_gauge import MemoryGauge

    gauge = MemoryGauge(interval=0.05)
    assert gauge._dom_classes == ("kb-memory-gauge",) and not gauge.running
    with pytest.raises(KanibookError, match="running event loop"):
        gauge.start()

    async def scenario():
        gauge.start()
        gauge.start()  # a second start is a no-op
        await asyncio.sleep(0.3)
        task = gauge._task
        gauge.stop()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return task

    task = run_async(scenario())
    assert task.done() and task.cancelled() and not gauge.running
    assert gauge.samples >= 4


# ---- the timeline of one generation ----------------------------------------------------------------------------


def _check_timeline(tl, tokens: int, engine) -> None:
    assert tl.kind == ("cuda" if str(engine.device).startswith("cuda") else "process")
    assert tl.completion_tokens == tokens and tl.stats.completion_tokens == tokens
    t = [s.t for s in tl.samples]
    assert t == sorted(t) and len(t) >= 10
    assert 0 <= t[0] < tl.first_token_s < tl.end_s <= t[-1]
    assert sum(tl.first_token_s < x < tl.end_s for x in t) >= 5  # sampled during decoding, not just around it
    assert all(s.rss > 0 for s in tl.samples)


def test_timeline_figure_spans_the_generation(demo_engine, no_leaked_threads):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    tl = kmem.memory_timeline(
        demo_engine, "Tell me a story about a lighthouse.", max_new_tokens=24, min_new_tokens=24, do_sample=False,
        element_id="tl-1",
    )  # fmt: skip
    _check_timeline(tl, 24, demo_engine)
    fig = tl.figure()
    ax = fig.axes[0]
    data = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    series = tl.series()
    assert [line.get_label() for line in data] == list(series)
    assert list(series) == (["CUDA allocated", "CUDA reserved"] if tl.kind == "cuda" else ["process RSS"])
    xs, ys = data[0].get_xdata(), data[0].get_ydata()
    assert xs[0] <= 0.05 and xs[-1] >= tl.end_s and len(xs) == len(tl.samples)
    assert ys[0] == pytest.approx(next(iter(series.values()))[0] / 1e6)
    marks = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2}
    assert marks["first token"] == pytest.approx(tl.first_token_s) and marks["end"] == pytest.approx(tl.end_s)
    bundle = tl._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert 'id="tl-1"' in bundle["text/html"] and bundle["image/png"] in bundle["text/html"]
    assert "first token at" in bundle["text/plain"]
    assert plt.get_fignums() == open_before  # nothing left open in pyplot


def test_timeline_from_inside_a_running_loop(demo_engine, run_async, no_leaked_threads):
    """In a notebook cell a loop is running: the plain call still works, and the async one does too."""

    async def scenario():
        blocking = kmem.memory_timeline(demo_engine, MESSAGES, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        awaited = await kmem.memory_timeline_async(
            demo_engine, MESSAGES, max_new_tokens=12, min_new_tokens=12, do_sample=False
        )
        return blocking, awaited

    blocking, awaited = run_async(scenario())
    _check_timeline(blocking, 12, demo_engine)
    _check_timeline(awaited, 12, demo_engine)
    with pytest.raises(KanibookError, match="prompt string"):
        kmem.memory_timeline(demo_engine, [])


def test_timeline_views_escape_the_model_name(hostile):
    samples = [kmem.MemorySample(0.1 * i, 500_000_000 + i) for i in range(5)]
    tl = kmem.MemoryTimeline(samples, 0.1, 0.4, "process", model_name=hostile, completion_tokens=3)
    html_out = render.timeline_html(tl, "AAAA", element_id=hostile)
    tags = parse_html(html_out).tags
    assert {t for t, _ in tags} <= _ALLOWED_TAGS
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    if any(c in hostile for c in "<>\"'"):
        assert hostile not in html_out
    assert "\x00" not in str(tl) and "\u202e" not in str(tl)
    assert safe.clean_chars(hostile) in tl.figure().axes[0].get_title()
