"""The default dtype against fp32, in one process: a bare greedy ``generate`` of the embedded model, interleaved.

    python bench/bench_dtype.py [--tokens 64] [--trials 3]

``kanibook.load()`` with no dtype named loads bf16 on a CPU that computes bf16 natively (``avx512_bf16`` /
``amx_bf16``) and fp32 elsewhere (kanibook/engine/_dtype.py). This measures what that choice buys here: the default
engine and an fp32 engine (``quant="fp32"``) decode the same prompt, exactly ``--tokens`` tokens each, alternately,
best of ``--trials``; the figure is the default's tokens/s with fp32's as the baseline (target: at least as fast).
Also printed: whether the two greedy answers agree, and the first token where they part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bare_generate, figure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)

    from kani import ChatMessage

    import kanibook
    from kanibook.engine._dtype import default_cpu_dtype

    messages = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]
    default = kanibook.load(device="cpu")
    fp32 = kanibook.load(device="cpu", quant="fp32")
    print(f"default: {default.load_line}")
    print(f"fp32:    {fp32.load_line}")
    print(f"this CPU: {default_cpu_dtype()[1]}")
    best = {"default": float("inf"), "fp32": float("inf")}
    answers = {}
    bare_generate(default, messages, 4)  # warm both
    bare_generate(fp32, messages, 4)
    for _ in range(args.trials):
        for name, engine in (("default", default), ("fp32", fp32)):
            seconds, ids = bare_generate(engine, messages, args.tokens)
            best[name] = min(best[name], seconds)
            answers[name] = ids
    parted = next((i for i, (a, b) in enumerate(zip(answers["default"], answers["fp32"])) if a != b), None)
    print(f"greedy answers: {'identical' if parted is None else f'part at token {parted}'} over {args.tokens} tokens")
    dtype = str(default.model.dtype).removeprefix("torch.")
    figure(f"default dtype ({dtype}) decode, bare generate", args.tokens / best["default"], args.tokens / best["fp32"],
           unit="tok/s", baseline_name="fp32", target=1.0)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
