"""Soak: 100 chat rounds through the panel in one process; memory, threads and live widgets stay flat.

Run with ``-s`` to see the figures::

    .venv/bin/pytest tests/unit/test_soak.py -s -m slow

torch runs on one intra-op thread here: on a 2-core machine shared with other work, two spinning OpenMP threads
made each prefill 10-30x slower (seconds instead of 0.3 s), which says nothing about the panel.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import psutil
import pytest

import kanibook

ROUNDS = 100
CLEAR_EVERY = 10
MB = 1024 * 1024


def _live_widgets() -> int:
    from ipywidgets.widgets import widget

    return len(widget._instances)


def _sample() -> dict:
    gc.collect()
    return {
        "rss": psutil.Process().memory_info().rss,
        "threads": threading.active_count(),  # Python threads
        "os_threads": psutil.Process().num_threads(),  # every thread of the process (torch's pool included)
        "widgets": _live_widgets(),
    }


def _describe(sample: dict) -> str:
    return (
        f"RSS {sample['rss'] / MB:.1f} MB, {sample['threads']} Python threads ({sample['os_threads']} OS threads), "
        f"{sample['widgets']} live widgets"
    )


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_100_rounds_through_the_panel_stay_flat(demo_engine, run_async, no_leaked_threads, one_torch_thread):
    async def soak():
        panel = kanibook.chat(demo_engine, max_new_tokens=4)
        samples: dict[int, dict] = {}
        stats = []
        for i in range(1, ROUNDS + 1):
            panel.input.value = f"Say a word. ({i})"
            panel.send_button.click()
            await panel.wait()
            assert panel.status == "ready", panel.status
            stats.append(demo_engine.last_stats)
            if i % CLEAR_EVERY == 0:  # keep prompts short, as a person starting over would
                assert len(panel.kani.chat_history) == 2 * CLEAR_EVERY
                panel.clear_button.click()
                await panel.wait()
            if i in (10, ROUNDS):
                await asyncio.sleep(0)
                samples[i] = _sample()
        panel.close()
        return samples, stats

    start = time.perf_counter()
    samples, stats = run_async(soak(), timeout=600)
    elapsed = time.perf_counter() - start
    early, late = samples[10], samples[ROUNDS]
    growth = (late["rss"] - early["rss"]) / MB
    rates = sorted(s.tokens_per_second for s in stats if s.tokens_per_second)
    print(
        f"\nsoak: {ROUNDS} rounds in {elapsed:.0f} s (median {rates[len(rates) // 2]:.1f} tok/s); "
        f"after round 10: {_describe(early)}; after round {ROUNDS}: {_describe(late)}; RSS growth {growth:+.1f} MB"
    )
    assert all(s.completion_tokens <= 4 for s in stats)
    assert late["threads"] == early["threads"] and late["os_threads"] == early["os_threads"]
    assert late["widgets"] == early["widgets"]  # every closed message view left the widget registry
    assert growth < 50, f"RSS grew by {growth:.1f} MB over {ROUNDS - 10} rounds"
