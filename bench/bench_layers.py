"""Benchmark (not a test): the cost of looking inside the layers, on the embedded model and the lab's reference text.

1. ``kanibook.show_layers`` end to end (forward pass with the residual stream, the lens at every layer, the top 5
   per cell, the view's HTML) against one plain forward pass of the same text in the same run. Target: <= 3x.
2. The lab's comparison with ``layers=True`` against ``layers=False``, same settings, same run (the default
   settings of this machine; ``--quick``: fp32 and nf4 with one 8-token answer). Target: <= 1.3x.

Best of ``--repeats`` for (1); one run each for (2) (a comparison takes minutes).

Usage: python bench/bench_layers.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import figure

import kanibook
from kanibook.engine._model_thread import model_thread
from kanibook.quant.texts import REFERENCE_TEXT


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat; the lab with fp32 and nf4, one short answer")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    path = kanibook.demo_model_path(progress=False)
    engine = kanibook.load(path)
    ids = engine.tokenizer(REFERENCE_TEXT)["input_ids"]

    def forward():
        with torch.inference_mode():
            engine.model(input_ids=torch.tensor([ids]))

    model_thread().run(forward)  # warm
    plain = best(lambda: model_thread().run(forward), repeats)
    lens = best(lambda: kanibook.show_layers(engine, REFERENCE_TEXT)._repr_mimebundle_(), repeats)
    print(f"{len(ids)} tokens, {engine.model.config.num_hidden_layers} blocks: forward {plain:.2f} s, "
          f"show_layers end to end {lens:.2f} s")  # fmt: skip
    figure("show_layers end to end (reference text)", lens, plain, unit="s", baseline_name="one plain forward pass",
           target=3.0, higher_is_better=False)  # fmt: skip
    del engine
    if args.quick:
        kwargs = {"settings": "fp32,nf4", "prompts": ["What is the capital of France?"], "max_new_tokens": 8}
    else:
        kwargs = {}
    timings = {}
    for layers in (False, True):
        start = time.perf_counter()
        report = kanibook.compare_quantization(progress=False, layers=layers, **kwargs)
        timings[layers] = time.perf_counter() - start
        spent = {lab: e.get("seconds") for lab, e in report.layers.get("settings", {}).items()}
        print(f"lab layers={layers}: {timings[layers]:.1f} s" + (f"; layers pass per setting: {spent}" if layers else ""))
    figure("lab comparison with layers", timings[True], timings[False], unit="s", baseline_name="same lab, layers=False",
           target=1.3, higher_is_better=False)  # fmt: skip


if __name__ == "__main__":
    main()
