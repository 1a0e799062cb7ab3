"""Benchmark (not a test): the quantization lab's default comparison on the embedded model, with each setting's share.

Runs ``kanibook.compare_quantization()`` once (every setting a CPU runs, and the embedded model's own GGUF run by
llama.cpp where llama-cpp-python is installed; ``--quick``: fp32, bf16 and nf4 with one short answer) and prints the total time (target: under 3 minutes on a 2-core CPU), each setting's load,
quality pass and answers with their share of the total, and each setting's time and weight bytes as ratios to the
reference (fp32 on a CPU), measured in the same run, as figures of ``make bench``'s one table. The table of the comparison itself follows, with the machine.

Usage: python bench/bench_quant.py [--quick] [--save report.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

from _common import figure

import kanibook
from kanibook.quant.settings import default_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fp32, bf16 and nf4, one prompt of 8 tokens")
    parser.add_argument("--save", help="also save the report as JSON here")
    args = parser.parse_args()
    if args.quick:
        kwargs = {"settings": "fp32,bf16,nf4", "prompts": ["What is the capital of France?"], "max_new_tokens": 8}
    else:  # every preset, and the model's own GGUF run by llama.cpp where it is installed: the choice people face
        native = ["gguf"] if importlib.util.find_spec("llama_cpp") else []
        import torch

        kwargs = {"settings": [*default_settings("cuda" if torch.cuda.is_available() else "cpu"), *native]}
    kanibook.demo_model_path(progress=False)  # built once, outside the timing
    start = time.perf_counter()
    report = kanibook.compare_quantization(progress=False, **kwargs)
    total = time.perf_counter() - start
    steps = ("load_s", "quality_s", "answers_s")
    base = sum(report.reference.get(k) or 0.0 for k in steps)
    print(f"quantization lab, {'quick' if args.quick else 'default'} comparison on the demo model: "
          f"{total:.1f} s in all (target < 180 s on 2 cores)")  # fmt: skip
    print(f"{'setting':>10} {'load s':>7} {'quality s':>9} {'answers s':>9} {'sum s':>7} {'share':>6} {'x ref':>6}")
    accounted = 0.0
    for row in report.rows:
        parts = [row.get(k) or 0.0 for k in steps]
        accounted += sum(parts)
        status = "" if row["available"] else f"  unavailable: {row['reason']}"
        print(f"{row['label']:>10} {parts[0]:7.1f} {parts[1]:9.1f} {parts[2]:9.1f} {sum(parts):7.1f} "
              f"{sum(parts) / total:6.1%} {sum(parts) / base:6.2f}{status}")  # fmt: skip
    print(f"{'lab itself':>10} {'':7} {'':9} {'':9} {total - accounted:7.1f} {(total - accounted) / total:6.1%}"
          "   (imports, estimates, releasing memory between settings)")
    figure("quantization lab, whole comparison", total, unit="s", target=180, higher_is_better=False)
    ref_weights = report.reference.get("weights_bytes")
    for row in report.rows:
        if not row["available"] or row["reference"]:
            continue
        spent = sum(row.get(k) or 0.0 for k in steps)
        figure(f"lab {row['label']}: time of load + quality + answers", spent, base, unit="s",
               baseline_name="fp32 reference, same run", higher_is_better=False)  # fmt: skip
        if ref_weights and row.get("weights_bytes"):
            figure(f"lab {row['label']}: weight bytes", row["weights_bytes"], ref_weights, unit="B",
                   baseline_name="fp32 reference, same run", higher_is_better=False)  # fmt: skip
    print()
    print(report)
    if args.save:
        report.save(args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
