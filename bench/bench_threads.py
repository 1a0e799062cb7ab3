"""Streaming at full speed whatever the notebook ran before: kanibook's stream vs a bare generate from the notebook's
own thread, in one process, in the orders a person's session meets.

    python bench/bench_threads.py [--tokens 48] [--alternations 5]

The baseline is the best bare ``model.generate`` of exactly N tokens (greedy) called on the main thread, as a
notebook cell calls it, measured throughout the same process. Each streamed figure is N / (time of the whole
``engine.stream``, prompt building and prefill included), like the baseline's N / (time of ``generate``):

1. *fresh*: streams before the main thread ran any torch computation (after a 4-token warm-up stream);
2. *after main-thread torch*: after :func:`_common.notebook_work` (a 512x512 matmul in "a cell", a prompt view, a
   memory reading);
3. *after a panel round*: after one round of the chat panel on the same engine;
4. *alternating*: bare generate and stream alternately, 5 times (every stream follows main-thread torch work).

Orders 1 to 3 run 5 times each (``--repeats``; 2 and 3 alternate). Each figure is the best stream of its order against the best bare
generate: best of N on both sides, since a shared 2-core machine only ever makes a run slower, never faster.

For contrast, the same stream with kanibook's OpenMP pool release switched off (what every stream did before the
fix) is measured after main-thread torch work too. Then the decode rate is put against this machine's physical
limit, memory bandwidth / weight bytes (decoding one token reads every weight once), both measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import numpy as np
import torch
from _common import bare_generate, figure, notebook_work, panel_round
from kani import ChatMessage

import kanibook
from kanibook.engine import _model_thread

PROMPT = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]
TARGET = 0.95


async def stream(engine, n: int) -> tuple[float, float | None]:
    """N / seconds of one whole ``engine.stream``, and the engine's own decode rate (after the first token)."""
    start, stats = time.perf_counter(), None
    async for item in engine.stream(PROMPT, max_new_tokens=n, min_new_tokens=n, do_sample=False):
        if not isinstance(item, str):
            stats = item.stats
    assert stats.completion_tokens == n, stats
    return n / (time.perf_counter() - start), stats.tokens_per_second


def bandwidth_bytes_per_s(size_mb: int) -> float:
    """The best of a large numpy copy and a large torch copy (all torch threads): bytes read + written per second."""
    src = np.ones(size_mb * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = 0.0
    for copy in (lambda: np.copyto(dst, src), lambda: torch.from_numpy(dst).copy_(torch.from_numpy(src))):
        for _ in range(3):
            start = time.perf_counter()
            copy()
            best = max(best, 2 * src.nbytes / (time.perf_counter() - start))
    return best


async def run(args) -> None:
    n = args.tokens
    engine = kanibook.load()
    streamed: dict[str, list[float]] = {}
    decode: list[float] = []
    bare: list[float] = []

    def keep(order: str, result: tuple[float, float | None]) -> None:
        streamed.setdefault(order, []).append(result[0])
        if result[1]:
            decode.append(result[1])

    await stream(engine, 4)  # warm-up (one-time allocations), on the model thread: this thread stays fresh
    for _ in range(args.repeats):
        keep("fresh", await stream(engine, n))  # nothing has run torch on this thread yet
    panel = kanibook.chat(engine, max_new_tokens=n, hyperparams={"min_new_tokens": n})
    for _ in range(args.repeats):  # each order again and again: best of R on both sides, like the baseline
        notebook_work(engine, PROMPT)
        keep("after main-thread torch", await stream(engine, n))
        await panel_round(panel, "Tell me about lighthouses.", n)
        keep("after a panel round", await stream(engine, n))
    panel.close()
    for _ in range(args.alternations):
        bare.append(n / bare_generate(engine, PROMPT, n)[0])
        keep("alternating", await stream(engine, n))
    # For contrast: the stream as it ran before the fix, with the OpenMP pools left alive.
    release = _model_thread.release_cpu_threads
    _model_thread.release_cpu_threads = lambda: False
    try:
        bare.append(n / bare_generate(engine, PROMPT, n)[0])
        without = [(await stream(engine, n))[0] for _ in range(2)]
    finally:
        _model_thread.release_cpu_threads = release
    bare.append(n / bare_generate(engine, PROMPT, n)[0])

    base = max(bare)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), demo model fp32, greedy, {n} tokens; baseline: best of {len(bare)} "
          f"bare generate on the main thread ({min(bare):.2f}-{max(bare):.2f} tok/s: how much this machine's speed "
          "varies within one run)")  # fmt: skip
    for order, values in streamed.items():
        label = f"stream tok/s, {order}" + (f" (best of {len(values)})" if len(values) > 1 else "")
        figure(label, max(values), base, unit="tok/s", baseline_name="bare generate, main thread", target=TARGET)
    figure("stream tok/s after main-thread torch, pools NOT released (before the fix)", max(without), base,
           unit="tok/s", baseline_name="bare generate, main thread")  # fmt: skip

    weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    bandwidth = bandwidth_bytes_per_s(args.copy_mb)
    limit = bandwidth / weight_bytes
    print(f"memory bandwidth (copy, read + write) {bandwidth / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.0f} MB; "
          f"physical limit {limit:.1f} tok/s")  # fmt: skip
    figure("decode tok/s (engine, after the first token)", max(decode), limit, unit="tok/s",
           baseline_name="physical limit: bandwidth / weight bytes")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--alternations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="streams of each of the first three orders")
    parser.add_argument("--copy-mb", type=int, default=512, help="size of the bandwidth copy (default 512 MB)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
