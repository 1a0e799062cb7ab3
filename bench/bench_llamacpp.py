"""The embedded model's own GGUF run natively by llama.cpp: kanibook's stream and the chat panel vs llama.cpp's own
rate, same run.

    python bench/bench_llamacpp.py [--tokens 64] [--trials 3]

Baseline: llama-cpp-python's own token stream (``create_completion(stream=True)``) iterated on the main thread, as a
notebook cell would use llama.cpp directly, for exactly N tokens (the end-of-sequence token held back, as on the
measured side). Its *decode rate* is (N - 1) / (last piece - first piece); its *end-to-end rate* N / wall time.
Measured, interleaved with it: kanibook's ``stream()`` (llama.cpp on the model thread, pieces handed to the event
loop; the engine's own decode figure) and one chat-panel round (pieces arriving in the panel's message view; Send
click to rendered reply). The targets apply to the decode rates (how fast the reply streams); end to end includes
kani's prompt assembly, which a bare call does not do. Best of the trials. Needs llama-cpp-python.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import numpy as np
from _common import figure, notebook_work, panel_round
from kani import ChatMessage

import kanibook

PROMPT = "Write a long story about a lighthouse keeper and a storm."


def direct(engine, n: int) -> tuple[float, float]:
    """llama.cpp's own rates (decode, end to end) for exactly n tokens, streamed on this (the main) thread."""
    from llama_cpp import LogitsProcessorList

    tokens, n_prompt, _ = engine._get_generate_args([ChatMessage.user(PROMPT)])
    eos = engine.model.token_eos()

    def hold_eos(input_ids, scores):
        if len(input_ids) - n_prompt < n:
            scores[eos] = -np.inf
        return scores

    start, times = time.perf_counter(), []
    for chunk in engine.model.create_completion(tokens, max_tokens=n, temperature=0.0, stream=True,
                                                logits_processor=LogitsProcessorList([hold_eos])):  # fmt: skip
        if chunk["choices"][0].get("finish_reason") is None:
            times.append(time.perf_counter())
    assert len(times) == n, len(times)
    return (n - 1) / (times[-1] - times[0]), n / (time.perf_counter() - start)


async def streamed(engine, n: int) -> tuple[float, float]:
    start, stats = time.perf_counter(), None
    async for item in engine.stream([ChatMessage.user(PROMPT)], max_new_tokens=n, min_new_tokens=n, do_sample=False):
        if not isinstance(item, str):
            stats = item.stats
    assert stats.completion_tokens == n, stats
    return stats.tokens_per_second, n / (time.perf_counter() - start)


async def run(args) -> None:
    n = args.tokens
    engine = kanibook.load(backend="llama.cpp")
    panel = kanibook.chat(engine, max_new_tokens=n, hyperparams={"min_new_tokens": n, "do_sample": False})
    notebook_work(kanibook.load(), [ChatMessage.user(PROMPT)])  # a session's usual torch work on this thread
    direct(engine, 4)  # warm-up
    rates: dict[str, list[tuple[float, float]]] = {"direct": [], "stream": [], "panel": []}
    for _ in range(args.trials):
        rates["direct"].append(direct(engine, n))
        rates["stream"].append(await streamed(engine, n))
        elapsed, view = await panel_round(panel, PROMPT, n)
        rates["panel"].append(((n - 1) / (view.last_piece_at - view.first_piece_at), n / elapsed))
    panel.close()
    best = {name: (max(r[0] for r in values), max(r[1] for r in values)) for name, values in rates.items()}
    print(f"machine: {platform.machine()}, llama.cpp via llama-cpp-python, {engine.model.n_threads} threads; "
          f"embedded model's Q4_1 GGUF, greedy, {n} tokens, best of {args.trials} interleaved")  # fmt: skip
    base = "llama.cpp's own stream, main thread"
    figure("decode tok/s, kanibook stream, llama.cpp backend", best["stream"][0], best["direct"][0], unit="tok/s",
           baseline_name=base, target=0.95)  # fmt: skip
    figure("decode tok/s, arriving in the chat panel, llama.cpp backend", best["panel"][0], best["direct"][0],
           unit="tok/s", baseline_name=base, target=0.95)  # fmt: skip
    figure("end to end tok/s, kanibook stream, llama.cpp backend", best["stream"][1], best["direct"][1], unit="tok/s",
           baseline_name=base)  # fmt: skip
    figure("end to end tok/s, chat panel (Send click -> rendered), llama.cpp backend", best["panel"][1],
           best["direct"][1], unit="tok/s", baseline_name=base)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
