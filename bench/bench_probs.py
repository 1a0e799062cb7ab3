"""Benchmark (not a test): the cost of recording per-token probabilities, and of showing them.

1. Streamed tokens/s through ``KanibookEngine.stream`` with ``probabilities=True`` vs without, same prompt, same
   run (greedy, ``min_new_tokens`` = ``max_new_tokens``: exactly N tokens each); runs alternate, best of R. Also
   with sampling on (temperature 0.7, top-p 0.9), where both the raw and the sampled distribution are recorded.
   Target: ratio >= 0.95.
2. The view of a long reply (512 tokens by default): the time to render ``show_reply`` (HTML and text) and one live
   redraw of the panel's streaming view, against the time it took to generate that reply.

Usage: python bench/bench_probs.py [--tokens 64] [--repeats 5] [--view-tokens 512] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import torch
from _common import figure
from kani import ChatMessage

import kanibook
from kanibook.render import probs as render_probs

PROMPT = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]


def streamed(engine, n: int, **hp) -> tuple[float, object]:
    """Tokens/s of one streamed reply of exactly n tokens, and its completion."""

    async def go():
        start = time.perf_counter()
        completion = None
        async for item in engine.stream(PROMPT, max_new_tokens=n, min_new_tokens=n, **hp):
            if not isinstance(item, str):
                completion = item
        return time.perf_counter() - start, completion

    elapsed, completion = asyncio.run(go())
    return n / elapsed, completion


def best(values: list[float]) -> float:
    return max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--view-tokens", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="the smallest sizes (8 tokens, 1 repeat, 32-token view)")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.view_tokens = 8, 1, 32
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    engine = kanibook.load()
    streamed(engine, 4, do_sample=False)  # warm-up
    streamed(engine, 4, do_sample=False, probabilities=True)
    sampling = {"do_sample": True, "temperature": 0.7, "top_p": 0.9}
    rates: dict[str, list[float]] = {k: [] for k in ("greedy", "greedy + probs", "sampled", "sampled + probs")}
    for _ in range(args.repeats):
        rates["greedy"].append(streamed(engine, args.tokens, do_sample=False)[0])
        rates["greedy + probs"].append(streamed(engine, args.tokens, do_sample=False, probabilities=True)[0])
        rates["sampled"].append(streamed(engine, args.tokens, **sampling)[0])
        rates["sampled + probs"].append(streamed(engine, args.tokens, **sampling, probabilities=True)[0])
    print(f"\nstreamed tok/s, demo model, {args.tokens} tokens, best of {args.repeats} (alternating)")
    print("target: ratio >= 0.95")
    print(f"{'':18} {'tok/s':>8} {'ratio':>7}")
    for name, values in rates.items():
        base = best(rates[name.replace(" + probs", "")])
        print(f"{name:18} {best(values):8.2f} {best(values) / base:7.3f}")
    for kind in ("greedy", "sampled"):
        figure(f"stream tok/s with probabilities recorded, {kind}", best(rates[f"{kind} + probs"]), best(rates[kind]),
               unit="tok/s", baseline_name=f"the same stream without, {kind}", target=0.95)  # fmt: skip

    n = args.view_tokens
    start = time.perf_counter()
    _, completion = streamed(engine, n, do_sample=False, probabilities=True)
    generate_s = time.perf_counter() - start
    probs = completion.probs
    timings = {}
    start = time.perf_counter()
    bundle = kanibook.show_reply(completion)._repr_mimebundle_()
    timings["show_reply (html + text)"] = time.perf_counter() - start
    start = time.perf_counter()
    render_probs.reply_html(probs, title="probabilities", least=0, streaming=True)
    timings["one live panel redraw"] = time.perf_counter() - start
    size = len(bundle["text/html"])
    print(f"\nview of a {len(probs)}-token reply (generated in {generate_s:.2f} s; html {size} chars)")
    print(f"{'':26} {'ms':>8} {'vs generation':>14}")
    for name, seconds in timings.items():
        print(f"{name:26} {1000 * seconds:8.1f} {seconds / generate_s:14.4f}")
    figure(f"show_reply of a {len(probs)}-token reply (html + text)", timings["show_reply (html + text)"] * 1e3,
           generate_s * 1e3, unit="ms", baseline_name="generating it", target=0.05, higher_is_better=False)  # fmt: skip


if __name__ == "__main__":
    main()
