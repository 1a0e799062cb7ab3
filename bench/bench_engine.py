"""Benchmark (not a test): the kanibook engine's streaming and the demo model's load, against baselines in the same run.

1. Streamed tokens/s through ``KanibookEngine.stream`` vs a bare ``model.generate`` of the same length (greedy,
   ``min_new_tokens`` = ``max_new_tokens`` so every run makes exactly N tokens); kani 1.10's own
   ``HuggingEngine.stream`` is measured too, for reference. Runs alternate, best of R.
2. Loading the demo model from kanibook's cache vs loading the GGUF directly with transformers.

Usage: python bench/bench_engine.py [--tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import threading
import time

import torch
from kani import ChatMessage
from kani.engines.huggingface import HuggingEngine
from transformers import AutoModelForCausalLM, AutoTokenizer

import kanibook
from kanibook.demo_model import demo_gguf_path, demo_model_path

PROMPT = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]


def bare_generate(engine, n: int) -> float:
    """A bare ``model.generate`` of exactly n tokens, timed in a worker thread as the engine runs it.

    (On this 2-core machine, torch on the main thread can run several times slower than in a worker thread when
    anything else is busy, which would flatter the ratio; the thread makes the comparison like for like.)
    """
    inputs, input_len, hp = engine._get_generate_args(engine.build_prompt(PROMPT))
    hp = {**hp, "max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    hp.pop("max_length", None)
    result = {}

    def work():
        start = time.perf_counter()
        with torch.no_grad():
            out = engine.model.generate(**inputs, **hp)
        result["elapsed"] = time.perf_counter() - start
        assert out.shape[1] - input_len == n

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return n / result["elapsed"]


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
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"cuda={torch.cuda.is_available()}")
    engine = kanibook.load()
    streamed(engine, 8)  # warm-up
    bare_generate(engine, 8)
    rates = {"bare generate": [], "kanibook stream": [], "kani 1.10 stream": []}
    for _ in range(args.repeats):
        rates["bare generate"].append(bare_generate(engine, args.tokens))
        rates["kanibook stream"].append(streamed(engine, args.tokens))
        rates["kani 1.10 stream"].append(kani_streamed(engine, args.tokens))
    base = max(rates["bare generate"])
    print(f"\nstreaming, demo model, greedy, {args.tokens} tokens, best of {args.repeats} (alternating)")
    print(f"{'':20} {'tok/s':>8} {'ratio':>7}")
    for name, values in rates.items():
        print(f"{name:20} {max(values):8.2f} {max(values) / base:7.3f}")
    del engine
    cache, direct = load_times(args.load_repeats)
    print(f"\ndemo model load, best of {args.load_repeats}")
    print(f"{'from kanibook cache':20} {cache:7.2f} s")
    print(f"{'GGUF directly':20} {direct:7.2f} s   (cache is {direct / cache:.1f}x faster)")
    cold_cache, cold_direct = cold_load_times()
    print("demo model load in a fresh process (imports included)")
    print(f"{'from kanibook cache':20} {cold_cache:7.2f} s")
    print(f"{'GGUF directly':20} {cold_direct:7.2f} s   (cache is {cold_direct / cold_cache:.1f}x faster)")


if __name__ == "__main__":
    main()
