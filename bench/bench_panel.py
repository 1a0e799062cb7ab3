"""The chat panel's speed against a bare ``model.generate`` of the same length, same run; and Stop latency.

    KANIBOOK_CACHE=... python bench/bench_panel.py [--tokens 64] [--trials 3] [--stop-trials 5] [--threads N]

Part 1, streaming (demo model, greedy, ``min_new_tokens = max_new_tokens = --tokens``), trials interleaved so both
sides see the same machine load:

- *decode tok/s*: the figure the panel shows under the reply (``kb-figures``; the engine's ``(n - 1) / (t_last -
  t_first)``) against the bare decode rate ``(n - 1) / (t(generate n) - t(generate 1))``;
- *arrival tok/s*: tokens reaching the panel's message view on the event loop, ``(n - 1) / (last piece - first
  piece)``, against the same bare decode rate;
- *end to end*: ``n / (Send click -> reply rendered and the loop idle)`` (kani's prompt building, prefill, streaming,
  widget updates) against ``n / t(generate n)``.

The panel's reply is checked to be the same text as the bare ``generate`` (greedy), and its prompt the same length.

Part 2, Stop: a long reply is stopped with the Stop button after a few tokens; reported are the tokens that still
arrived after the click and the time from the click to the end of ``generate`` (engine) and to the panel being idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

from _common import bare_generate, figure, notebook_work, panel_round

PROMPT = "Write a long story about a dragon who learns to bake bread."


async def one_round(panel, n: int) -> dict:
    elapsed, view = await panel_round(panel, PROMPT, n)
    stats = view.stats
    arrival = (n - 1) / (view.last_piece_at - view.first_piece_at)
    return {"elapsed": elapsed, "shown": stats.tokens_per_second, "arrival": arrival, "view": view, "stats": stats}


async def stop_trial(panel, engine, after_pieces: int) -> dict:
    panel.clear()
    await panel.wait()
    panel.input.value = PROMPT
    panel.send_button.click()
    while len(panel.messages) < 2 or panel.messages[-1].pieces < after_pieces:
        await asyncio.sleep(0.002)
    click = time.perf_counter()
    panel.stop_button.click()
    await panel.wait()
    idle = time.perf_counter() - click
    stats = engine.last_stats
    assert stats.stopped and "kb-msg-stopped" in panel.messages[-1].widget._dom_classes
    return {"tokens_after": stats.tokens_after_stop, "engine_ms": stats.stop_latency_s * 1e3, "idle_ms": idle * 1e3,
            "tokens": stats.completion_tokens}  # fmt: skip


def median(values) -> float:
    return statistics.median(values)


async def run(args) -> None:
    import torch
    from kani import ChatMessage

    import kanibook

    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.tokens
    engine = kanibook.load()
    messages = [ChatMessage.user(PROMPT)]
    panel = kanibook.chat(engine, max_new_tokens=n, hyperparams={"min_new_tokens": n})
    load_before = os.getloadavg()

    notebook_work(engine, messages)  # the baseline runs like a user's cell: on the main thread, after notebook work
    bare_generate(engine, messages, 4)  # warm-up, untimed
    await one_round(panel, n)
    bare_n, bare_1, rounds = [], [], []
    reference: list[int] = []
    for _ in range(args.trials):
        t, reference = bare_generate(engine, messages, n)
        bare_n.append(t)
        bare_1.append(bare_generate(engine, messages, 1)[0])
        rounds.append(await one_round(panel, n))
    text = engine.tokenizer.decode([i for i in reference if i != engine.tokenizer.eos_token_id]).strip()
    same_text = all(r["view"].message.text == text for r in rounds)
    same_prompt = rounds[0]["stats"].prompt_tokens == len(engine.build_prompt(messages)["input_ids"][0])

    panel.settings.max_new_tokens.value = 512  # a long reply to stop
    panel.hyperparams["min_new_tokens"] = 512
    stops = [await stop_trial(panel, engine, args.stop_after) for _ in range(args.stop_trials)]
    load_after = os.getloadavg()
    panel.close()

    bare_decode = (n - 1) / (median(bare_n) - median(bare_1))
    bare_e2e = n / median(bare_n)
    shown, arrival = median(r["shown"] for r in rounds), median(r["arrival"] for r in rounds)
    e2e = n / median(r["elapsed"] for r in rounds)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"python {platform.python_version()}, torch {torch.__version__}; bare generate on the main thread; "
          "load average "
          f"{load_before[0]:.1f} -> {load_after[0]:.1f}")  # fmt: skip
    print(f"demo model, greedy, {n} new tokens, {args.trials} interleaved trials (medians); "
          f"panel text == bare generate: {same_text}; same prompt length: {same_prompt}\n")  # fmt: skip
    print("| streaming | panel | bare generate | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("decode tok/s, the figure shown under the reply", shown, bare_decode),
        ("decode tok/s, tokens arriving in the panel", arrival, bare_decode),
        ("end to end tok/s (Send click -> rendered)", e2e, bare_e2e),
    ]
    for label, ours, bare in rows:
        print(f"| {label} | {ours:.1f} | {bare:.1f} | {ours / bare:.3f} |")
    figure("panel decode tok/s shown under the reply", shown, bare_decode, unit="tok/s",
           baseline_name="bare decode, main thread", target=0.95)
    figure("panel end to end tok/s (Send click -> rendered)", e2e, bare_e2e, unit="tok/s",
           baseline_name="bare generate, main thread", target=0.95)
    print(f"\nStop button after {args.stop_after} streamed pieces, {args.stop_trials} trials:\n")
    print("| stop | median | max |")
    print("|---|---|---|")
    after = [s["tokens_after"] for s in stops]
    print(f"| tokens after the click | {median(after):.0f} | {max(after)} |")
    figure("Stop: tokens after the click (worst trial)", max(after), unit="tokens", target=1, higher_is_better=False)
    for key, label in (("engine_ms", "click -> generate ended (ms)"), ("idle_ms", "click -> panel idle (ms)")):
        values = [s[key] for s in stops]
        print(f"| {label} | {median(values):.0f} | {max(values):.0f} |")
    print(f"| reply length when stopped (tokens) | {median(s['tokens'] for s in stops):.0f} | "
          f"{max(s['tokens'] for s in stops)} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per streamed reply (default 64)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved panel / bare trials (default 3)")
    parser.add_argument("--stop-trials", type=int, default=5, help="Stop trials (default 5)")
    parser.add_argument("--stop-after", type=int, default=8, help="streamed pieces before Stop (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
