"""Benchmark (not a test): what ``explain_reply`` costs against one teacher-forced scoring of the same conversation.

1. By message: ``explain_reply`` on a six-message conversation (a document, its acknowledgement, a question, its
   answer, a follow-up, the reply explained) with the embedded model, against ``score_text`` of the same conversation
   (the one scoring path: show_prompt + one forward pass), best of R each, alternating. Target: at most (messages + 2)
   times it.
2. By token: ``explain_reply(..., detail=0)`` (the document, about 100 tokens) within its budget of forward passes:
   passes used (target: <= budget) and its time against the same scoring (target: at most messages + 2 + passes).
3. The llama.cpp road (where llama-cpp-python is installed): (1) on the embedded model's own Q4_1 GGUF run by
   llama.cpp, against ``score_text`` through llama.cpp (the variants are scored one at a time there). Same target.

Usage: python bench/bench_explain.py [--repeats 3] [--budget 64] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from _common import figure
from kani import ChatMessage

import kanibook

DOCUMENT = (
    "The lighthouse on Quillon Rock was built in 1871 by the engineer Maren Tolvik. It stands 38 metres tall and its "
    "lamp could be seen from 22 nautical miles away. The first keeper, Adda Brenholm, kept a diary of every storm; "
    "in the winter of 1883 she recorded eleven gales in six weeks and rescued the crew of the schooner Petrel. The "
    "light was automated in 1964 and the keeper's cottage became a small museum that opens every summer."
)
CONVERSATION = [
    ChatMessage.user(f"Here is a document:\n\n{DOCUMENT}"),
    ChatMessage.assistant("Thank you, I have read the document."),
    ChatMessage.user("Who was the first keeper, and what did she do in 1883?"),
    ChatMessage.assistant("The first keeper was Adda Brenholm. In 1883 she rescued the crew of the schooner Petrel."),
    ChatMessage.user("Who built the lighthouse?"),
]
REPLY = ChatMessage.assistant("The lighthouse was built in 1871 by the engineer Maren Tolvik.")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="one repeat, a budget of 8")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.budget = 1, 8
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    engine = kanibook.load()
    messages = [*CONVERSATION, REPLY]
    n = len(messages)  # six: five before the reply, and the reply explained
    kanibook.score_text(engine, messages)  # warm-up (tokenizer caches, the model thread's first pass)
    scoring, explaining, detailing, passes = [], [], [], 0
    for _ in range(args.repeats):
        scoring.append(timed(lambda: kanibook.score_text(engine, messages)))
        explaining.append(timed(lambda: kanibook.explain_reply(engine, messages=messages, progress=False)))
        holder = {}
        detailing.append(timed(lambda: holder.setdefault("x", kanibook.explain_reply(
            engine, messages=messages, detail=0, budget=args.budget, progress=False))))  # fmt: skip
        passes = holder["x"].detail.passes
    one = min(scoring)
    print(f"score_text {one * 1e3:.0f} ms; explain_reply {min(explaining) * 1e3:.0f} ms; with detail "
          f"{min(detailing) * 1e3:.0f} ms ({passes} passes, budget {args.budget})")  # fmt: skip
    figure(f"explain_reply, {n}-message conversation (s)", min(explaining), one, unit="s",
           baseline_name="score_text of the same conversation", target=n + 2, higher_is_better=False)
    figure("explain_reply token detail: forward passes used", passes, unit="passes", target=args.budget,
           higher_is_better=False)
    figure(f"explain_reply with token detail, budget {args.budget} (s)", min(detailing), one, unit="s",
           baseline_name="score_text of the same conversation", target=n + 2 + passes, higher_is_better=False)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp road: skipped (pip install 'kanibook[llamacpp]')")
        return
    del engine
    engine = kanibook.load(backend="llama.cpp")
    kanibook.score_text(engine, messages)  # warm-up
    scoring, explaining = [], []
    for _ in range(args.repeats):
        scoring.append(timed(lambda: kanibook.score_text(engine, messages)))
        explaining.append(timed(lambda: kanibook.explain_reply(engine, messages=messages, progress=False)))
    print(f"llama.cpp: score_text {min(scoring) * 1e3:.0f} ms; explain_reply {min(explaining) * 1e3:.0f} ms")
    figure(f"explain_reply on llama.cpp, {n}-message conversation (s)", min(explaining), min(scoring), unit="s",
           baseline_name="score_text through llama.cpp", target=n + 2, higher_is_better=False)


if __name__ == "__main__":
    main()
