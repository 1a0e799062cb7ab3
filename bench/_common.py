"""What every benchmark shares: the figure report, the baseline a user would run, and the notebook's usual work.

- :func:`figure` prints one figure with its same-run baseline, ratio and target, and (under ``bench/run_all.py``)
  appends it as a JSON line to the file named by ``$KANIBOOK_BENCH_FIGURES``, so ``make bench`` prints one table of
  every figure of every script.
- :func:`bare_generate` is the baseline of every streaming figure: a plain ``model.generate`` of exactly ``n``
  tokens called from the main thread, as a notebook cell would call it.
- :func:`notebook_work` is what a notebook has usually done before: the user's own torch work in a cell (a matmul),
  a prompt view, a memory reading. Benchmarks run it before their baselines, as a person's session would.
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["bare_generate", "figure", "notebook_work", "panel_round"]


def figure(
    name: str,
    value: float,
    baseline: float | None = None,
    *,
    unit: str = "",
    baseline_name: str = "",
    target: float | None = None,
    higher_is_better: bool = True,
) -> dict:
    """Report one figure. ``target`` applies to the ratio ``value / baseline`` (or to ``value`` without baseline)."""
    ratio = value / baseline if baseline else None
    judged = ratio if ratio is not None else value
    met = None if target is None else (judged >= target if higher_is_better else judged <= target)
    row = {"name": name, "value": value, "unit": unit, "baseline": baseline, "baseline_name": baseline_name,
           "ratio": ratio, "target": target, "higher_is_better": higher_is_better, "met": met}  # fmt: skip
    text = f"FIGURE {name}: {value:.4g} {unit}".rstrip()
    if baseline is not None:
        text += f" | baseline ({baseline_name}) {baseline:.4g} | ratio {ratio:.3f}"
    if target is not None:
        text += f" | target {'>=' if higher_is_better else '<='} {target:g}: {'met' if met else 'NOT met'}"
    print(text, flush=True)
    path = os.environ.get("KANIBOOK_BENCH_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
    return row


def bare_generate(engine, messages, n: int) -> tuple[float, list[int]]:
    """A plain ``model.generate`` of exactly ``n`` new tokens (greedy) on the calling (main) thread: seconds, ids."""
    import torch

    inputs, input_len, hp = engine._get_generate_args(
        engine.build_prompt(messages), max_new_tokens=n, min_new_tokens=n, do_sample=False
    )
    hp.pop("max_length", None)
    start = time.perf_counter()
    with torch.no_grad():
        out = engine.model.generate(**inputs, **hp)
    elapsed = time.perf_counter() - start
    assert out.shape[1] - input_len == n
    return elapsed, out[0][input_len:].tolist()


def notebook_work(engine, messages) -> None:
    """What a notebook's main thread has usually done before chatting: torch in a cell, a prompt view, a reading."""
    import torch

    import kanibook

    a = torch.randn(512, 512)
    (a @ a).sum().item()  # the user's own cell
    kanibook.show_prompt(engine, messages)
    kanibook.memory(engine)


async def panel_round(panel, text: str, n: int):
    """One round of the chat panel from a cleared conversation: (seconds from the Send click to the rendered reply
    with the loop idle, the reply's message view). Checks the reply has exactly ``n`` tokens."""
    panel.clear()
    await panel.wait()
    panel.input.value = text
    start = time.perf_counter()
    panel.send_button.click()
    await panel.wait()
    elapsed = time.perf_counter() - start
    view = panel.messages[-1]
    assert view.stats.completion_tokens == n, view.stats
    return elapsed, view
