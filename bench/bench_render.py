"""Prompt view: render time of a long conversation vs the tokenizer's own time for the same text, same run.

    KANIBOOK_CACHE=/tmp/kbcache .venv/bin/python bench/bench_render.py [--tokens 8000] [--repeats 7]

Baseline: ``tokenizer(prompt_text, add_special_tokens=False)`` on the demo model's fast tokenizer (the text is the
whole templated conversation). Measured: ``show_prompt(engine, messages)`` plus ``_repr_mimebundle_()`` (HTML and
text), i.e. everything a notebook does to display it: kani's ``build_prompt`` (template + tokenization), the text
each token covers, the segmentation by message (its prefix renders included), the HTML and the plain text. Medians of
``--repeats`` runs (and the best run) after a warm-up, the four measurements taking turns so that a busy machine
slows them alike. Also printed: the same for a ``Kani`` (whose ``get_prompt`` counts the tokens
once more to decide what fits), a conversation of many short messages, the HTML size per token, and the same
measurements on a template that rewrites turns (the demo model's tokenizer, from its folder alone, with a ChatML
template that strips ``<think>...</think>`` reasoning from earlier assistant replies, over a conversation whose replies
carry reasoning): the segmentation's marked render and the "what the template did" list included. The last lines
print the two ratios against the target (<= 3x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import figure

SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Could you explain how photosynthesis turns sunlight, water and carbon dioxide into sugar?",
    "Sure: chlorophyll absorbs light, which splits water and powers the Calvin cycle in the stroma.",
    "Napoléon's café served crème brûlée — naïve tourists paid €12 for it. 😀",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Tokyo, Paris and São Paulo are large cities; each has its own character and history.",
]


#: ChatML that strips the reasoning from every assistant reply but the last (as DeepSeek-R1's and Qwen3's do);
#: written for this benchmark.
REWRITING_TEMPLATE = (
    "{% for m in messages %}{% set c = m.content %}{% if m.role == 'assistant' and not loop.last %}"
    "{% set c = c.split('</think>')[-1] | trim %}{% endif %}<|im_start|>{{ m.role }}\n{{ c }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def conversation(tokenizer, engine, target_tokens: int, sentences_per_message: int, reasoning: bool = False):
    """Alternating user/assistant messages until the templated prompt has about ``target_tokens`` tokens.

    :param reasoning: Begin each assistant reply with ``<think>...</think>`` (which a rewriting template strips).
    """
    from kani import ChatMessage

    messages, i = [ChatMessage.system("You are a helpful assistant.")], 0
    while True:
        body = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(sentences_per_message))
        if reasoning and not len(messages) % 2:
            body = f"<think>{SENTENCES[(i + 2) % len(SENTENCES)]} {SENTENCES[(i + 3) % len(SENTENCES)]}</think>{body}"
        messages.append(ChatMessage.user(body) if len(messages) % 2 else ChatMessage.assistant(body))
        i += 1
        if (
            i % 8 == 0
            and len(tokenizer(engine.pipeline(messages), add_special_tokens=False)["input_ids"]) >= target_tokens
        ):
            return messages


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, taking turns, so a busy machine slows them alike (after a warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def measure(engine, messages, repeats: int, label: str, kani_target: bool = False) -> float:
    from kani import Kani

    import kanibook

    tokenizer = engine.tokenizer
    text = engine.pipeline(messages)
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if kani_target:
        ai = Kani(engine, system_prompt=messages[0].text, chat_history=messages[1:], desired_response_tokens=64)
        ai.max_context_size = max(engine.max_context_size, n_tokens + 1000)

        def view():
            return kanibook.show_prompt(ai)
    else:

        def view():
            return kanibook.show_prompt(engine, messages, element_id="bench")

    shown = view()
    times = interleaved(
        {
            "tokenize": lambda: tokenizer(text, add_special_tokens=False),
            "build_prompt": lambda: engine.build_prompt(messages),
            "show_prompt": view,
            "display": lambda: (setattr(shown, "_html", None), shown._repr_mimebundle_()),
        },
        repeats,
    )
    med = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    bundle = shown._repr_mimebundle_()
    html_bytes = len(bundle["text/html"].encode())
    print(f"\n== {label}: {len(messages)} messages, {n_tokens} tokens (view shows {shown.total}) ==")
    print("                                  median      best")
    rows = [
        ("tokenizer(text)  [baseline]", "tokenize"),
        ("engine.build_prompt(messages)", "build_prompt"),
        ("show_prompt (ids+segmentation)", "show_prompt"),
        ("_repr_mimebundle_ (HTML+text)", "display"),
    ]
    for title, name in rows:
        print(f"{title:<32} {med[name] * 1e3:7.1f} ms {best[name] * 1e3:7.1f} ms")
    for kind, t in (("median", med), ("best", best)):
        total = t["show_prompt"] + t["display"]
        print(f"render total ({kind:<6})           {total * 1e3:7.1f} ms = {total / t['tokenize']:.2f}x tokenizing")
    if shown.template_notes:
        print(f"what the template did: {len(shown.template_notes)} notes, e.g. {shown.template_notes[0].text}")
    print(
        f"HTML {html_bytes / 1e3:.0f} kB = {html_bytes / shown.total:.0f} bytes/token; "
        f"text/plain {len(bundle['text/plain'].encode()) / 1e3:.0f} kB"
    )
    total = med["show_prompt"] + med["display"]
    figure(f"prompt view (ids, segments, HTML, text), {label}, {n_tokens} tokens", total * 1e3, med["tokenize"] * 1e3,
           unit="ms", baseline_name="tokenizer(text), medians", target=3, higher_is_better=False)  # fmt: skip
    return total / med["tokenize"]


def rewriting_engine(demo_folder, workdir):
    """The demo model's tokenizer (its folder without the weights) with :data:`REWRITING_TEMPLATE`, tokenizer only."""
    import json
    import shutil
    from pathlib import Path

    from kanibook.prompt.tokenizer_only import tokenizer_engine

    folder = Path(workdir) / "rewriting"
    folder.mkdir()
    for f in Path(demo_folder).iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")) and f.name != "chat_template.jinja":
            shutil.copy(f, folder / f.name)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = REWRITING_TEMPLATE
    config.write_text(json.dumps(data))
    return tokenizer_engine(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="the smallest sizes (1,000 tokens, 2 repeats)")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats = 1000, 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import kanibook

    engine = kanibook.load()
    tok = engine.tokenizer
    print(f"demo model {engine.model_id}; {os.cpu_count()} CPU cores")
    chatml = measure(engine, conversation(tok, engine, args.tokens, 8), args.repeats, "engine + messages, ~200-token turns")
    measure(engine, conversation(tok, engine, args.tokens, 8), args.repeats, "Kani (get_prompt included)", True)
    measure(engine, conversation(tok, engine, args.tokens, 1), args.repeats, "engine + messages, ~25-token turns")
    import tempfile

    from kanibook.demo_model import demo_model_path

    with tempfile.TemporaryDirectory() as workdir:
        rew = rewriting_engine(demo_model_path(progress=False), workdir)
        msgs = conversation(rew.tokenizer, rew, args.tokens, 8, reasoning=True)
        rewriting = measure(rew, msgs, args.repeats, "template that rewrites turns (reasoning stripped)")
    print(f"\nratio ChatML (demo template): {chatml:.2f}x tokenizing; template that rewrites turns: {rewriting:.2f}x")


if __name__ == "__main__":
    main()
