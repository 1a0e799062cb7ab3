"""The embedded model's own GGUF run natively by llama.cpp: kanibook's stream and the chat panel vs llama.cpp's own
rate, same run.

    python bench/bench_llamacpp.py [--tokens 64] [--trials 3]

Baseline: ``Llama.create_completion`` called on the main thread, as a notebook cell would call llama.cpp directly,
for exactly N tokens (the end-of-sequence token held back, as on the measured side). Measured, interleaved with it:
kanibook's ``stream()`` (llama.cpp on the model thread, pieces handed to the event loop) and one chat-panel round
(Send click to rendered reply). Figures are N / wall time, best of the trials. Needs llama-cpp-python.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import numpy as np
from _common import figure, notebook_work
from kani import ChatMessage

import kanibook

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def direct(engine, n: int) -> float:
    """llama.cpp's own rate: one create_completion of exactly n tokens on this (the main) thread."""
    from llama_cpp import LogitsProcessorList

    tokens, n_prompt, _ = engine._get_generate_args([ChatMessage.user(PROMPT)])
    eos = engine.model.token_eos()

    def hold_eos(input_ids, scores):
        if len(input_ids) - n_prompt < n:
            scores[eos] = -np.inf
        return scores

    start = time.perf_counter()
    out = engine.model.create_completion(tokens, max_tokens=n, temperature=0.0,
                                         logits_processor=LogitsProcessorList([hold_eos]))  # fmt: skip
    elapsed = time.perf_counter() - start
    assert out["usage"]["completion_tokens"] == n, out["usage"]
    return n / elapsed


async def streamed(engine, n: int) -> float:
    start = time.perf_counter()
    async for item in engine.stream([ChatMessage.user(PROMPT)], max_new_tokens=n, min_new_tokens=n, do_sample=False):
        if not isinstance(item, str):
            assert item.stats.completion_tokens == n, item.stats
    return n / (time.perf_counter() - start)


async def panel_round(panel, n: int) -> float:
    panel.clear()
    await panel.wait()
    panel.input.value = PROMPT
    start = time.perf_counter()
    panel.send_button.click()
    await panel.wait()
    elapsed = time.perf_counter() - start
    assert panel.messages[-1].stats.completion_tokens == n, panel.messages[-1].stats
    return n / elapsed


async def run(args) -> None:
    n = args.tokens
    engine = kanibook.load(backend="llama.cpp")
    panel = kanibook.chat(engine, max_new_tokens=n, hyperparams={"min_new_tokens": n, "do_sample": False})
    notebook_work(kanibook.load(), [ChatMessage.user(PROMPT)])  # a session's usual torch work on this thread
    direct(engine, 4)  # warm-up
    rates: dict[str, list[float]] = {"direct": [], "stream": [], "panel": []}
    for _ in range(args.trials):
        rates["direct"].append(direct(engine, n))
        rates["stream"].append(await streamed(engine, n))
        rates["panel"].append(await panel_round(panel, n))
    panel.close()
    base = max(rates["direct"])
    print(f"machine: {platform.machine()}, llama.cpp via llama-cpp-python, {engine.model.n_threads} threads; "
          f"embedded model's Q4_1 GGUF, greedy, {n} tokens, best of {args.trials} interleaved")  # fmt: skip
    figure("kanibook stream tok/s, llama.cpp backend", max(rates["stream"]), base, unit="tok/s",
           baseline_name="llama.cpp create_completion, main thread", target=0.95)  # fmt: skip
    figure("chat panel end to end tok/s, llama.cpp backend", max(rates["panel"]), base, unit="tok/s",
           baseline_name="llama.cpp create_completion, main thread", target=0.95)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
