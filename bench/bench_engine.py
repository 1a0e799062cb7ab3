"""Benchmark (not a test): the kanibook engine's streaming and the demo model's load, against baselines in the same run.

1. Streamed tokens/s through ``KanibookEngine.stream`` vs a bare ``model.generate`` of the same length (greedy,
   ``min_new_tokens`` = ``max_new_tokens`` so every run makes exactly N tokens) called from the main thread, as a
   notebook cell would, after the work a notebook does first (``_common.notebook_work``); kani 1.10's own
   ``HuggingEngine.stream`` is measured too, for reference. Runs alternate, best of R.
2. Loading the demo model from kanibook's cache vs loading the GGUF directly with transformers.

Usage: python bench/bench_engine.py [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import torch
from kani import ChatMessage
from kani.engines.huggingface import HuggingEngine
from _common import bare_generate, figure, notebook_work
from transformers import AutoModelForCausalLM, AutoTokenizer

import kanibook
from kanibook.demo_model import demo_gguf_path, demo_model_path

PROMPT = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]


def streamed(engine, n: int) -> float:
    async def go():
        start = time.perf_counter()
        pieces = 0
        async for item in engine.stream(PROMPT, max_new_tokens=n, min_new_tokens=n, do_sample=False):
            pieces += isinstance(item, str)
        return time.perf_counter() - start

    elapsed = asyncio.run(go())
    return n / elapsed


def kani_streamed(engine, n: int) -> float:
    """kani 1.10's own stream, called unbound on the same model (it blocks the loop between tokens)."""

    async def go():
        start = time.perf_counter()
        async for _ in HuggingEngine.stream(engine, PROMPT, max_new_tokens=n, min_new_tokens=n, do_sample=False):
            pass
        return time.perf_counter() - start

    return n / asyncio.run(go())


def load_times(repeats: int) -> tuple[float, float]:
    folder, gguf = demo_model_path(progress=False), demo_gguf_path()
    cache, direct = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        engine = kanibook.load(folder)
        cache.append(time.perf_counter() - start)
        del engine
        start = time.perf_counter()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        direct.append(time.perf_counter() - start)
    return min(cache), min(direct)


def cold_load_times() -> tuple[float, float]:
    """The same two loads, each in a fresh Python process (imports included), timed from outside."""
    import subprocess
    import sys

    folder, gguf = demo_model_path(progress=False), demo_gguf_path()
    scripts = {
        "cache": f"import kanibook; kanibook.load({str(folder)!r})",
        "gguf": (
            "import torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
            f"AutoTokenizer.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r}); "
            f"AutoModelForCausalLM.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r}, dtype=torch.float32)"
        ),
    }
    times = {}
    for name, code in scripts.items():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times[name] = time.perf_counter() - start
    return times["cache"], times["gguf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-repeats", type=int, default=2)
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process loads (quick mode)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"cuda={torch.cuda.is_available()}")
    engine = kanibook.load()
    notebook_work(engine, PROMPT)
    streamed(engine, 8)  # warm-up
    bare_generate(engine, PROMPT, 8)
    rates = {"bare generate": [], "kanibook stream": [], "kani 1.10 stream": []}
    for _ in range(args.repeats):
        rates["bare generate"].append(args.tokens / bare_generate(engine, PROMPT, args.tokens)[0])
        rates["kanibook stream"].append(streamed(engine, args.tokens))
        rates["kani 1.10 stream"].append(kani_streamed(engine, args.tokens))
    base = max(rates["bare generate"])
    print(f"\nstreaming, demo model, greedy, {args.tokens} tokens, best of {args.repeats} (alternating); "
          "baseline: bare generate on the main thread")
    figure("kanibook stream tok/s", max(rates["kanibook stream"]), base, unit="tok/s",
           baseline_name="bare generate, main thread", target=0.97)
    figure("kani 1.10 HuggingEngine.stream tok/s", max(rates["kani 1.10 stream"]), base, unit="tok/s",
           baseline_name="bare generate, main thread")
    del engine
    cache, direct = load_times(args.load_repeats)
    print(f"\ndemo model load, best of {args.load_repeats}")
    figure("demo model load from kanibook's cache, warm process", cache, direct, unit="s",
           baseline_name="GGUF directly", target=0.5, higher_is_better=False)
    if args.no_cold:
        return
    cold_cache, cold_direct = cold_load_times()
    figure("demo model load from kanibook's cache, fresh process", cold_cache, cold_direct, unit="s",
           baseline_name="GGUF directly", target=0.5, higher_is_better=False)


if __name__ == "__main__":
    main()
