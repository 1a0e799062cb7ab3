"""kanibook.render.tokens: the prompt view's HTML and text, from data alone (no model)."""

from __future__ import annotations

import re

from kani import ChatMessage

from kanibook.prompt.tokens import SPECIAL, TEMPLATE
from kanibook.prompt.view import PromptComparison, PromptView, Segment
from kanibook.render.tokens import CSS, prompt_text

TAGS = {"div", "span", "kbd", "del", "ins", "style", "details", "summary", "table", "tr", "td", "th", "b", "ol", "li",
        "ul"}  # fmt: skip
TOKEN = re.compile(r'<kbd(?: class="([^"]*)")? style="[^"]*" title="([^"]*)">(.*?)</kbd>', re.S)


def tokens_of(html: str) -> list[tuple[str, str, str]]:
    """(classes, title, inner HTML) of every token box."""
    return TOKEN.findall(html)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def make_view(texts, flags=None, *, ids=None, messages=None, element_id="kb-x", **kwargs) -> PromptView:
    """One message (or the given ones, split evenly) whose tokens have these texts (ids 100, 101, ... by default)."""
    messages = messages or [ChatMessage.user("".join(texts))]
    flags = flags or [0] * len(texts)
    per = max(1, len(texts) // len(messages))
    segs, token_segments = [], []
    for k, m in enumerate(messages):
        start, end = k * per, (len(texts) if k == len(messages) - 1 else (k + 1) * per)
        segs.append(Segment(m.role.value, f"#{k + 1} {m.role.value}", start, end, k, end - start, m.text or ""))
        token_segments += [k] * (end - start)
    kwargs.setdefault("context_size", 1000)
    kwargs.setdefault("reply_tokens", 100)
    return PromptView(
        token_ids=ids or list(range(100, 100 + len(texts))),
        texts=list(texts),
        flags=list(flags),
        token_segments=token_segments,
        segments=segs,
        messages=messages,
        title="demo · chat template",
        element_id=element_id,
        **kwargs,
    )


def html_of(obj) -> str:
    return obj._repr_mimebundle_()["text/html"]


def test_deterministic_with_an_element_id():
    a, b = make_view(["Hello", " world"]), make_view(["Hello", " world"])
    assert html_of(a) == html_of(b)
    assert html_of(a).startswith('<div class="kb-tokens" id="kb-x" style="')
    assert html_of(a).count("<style>") == 1 and "<script" not in html_of(a)
    assert html_of(make_view(["x"], element_id=None)) != html_of(make_view(["x"], element_id=None))  # random ids


def test_each_token_a_box_with_position_id_and_text_on_hover():
    html = html_of(make_view(["Hi", " there", "\n"]))
    body = html.split("</span></div>")[-1]  # after the legend
    assert tokens_of(body) == [
        ("", "#0 \u00b7 id 100 \u00b7 &quot;Hi&quot;", "Hi"),
        ("", "#1 \u00b7 id 101 \u00b7 &quot; there&quot;", "\u00b7there"),  # visible space
        ("", "#2 \u00b7 id 102 \u00b7 &quot;\\n&quot;", "\u21b5\n"),  # visible newline
    ]
    box = re.search(r'<kbd style="([^"]*)" title="#0', html).group(1)
    assert "border:1px solid" in box and "display:inline" in box  # a box even where <style> is removed


def test_special_template_and_continuation_tokens_are_marked():
    html = html_of(make_view(["<s>", "[INST]", "x", ""], [SPECIAL | TEMPLATE, TEMPLATE, 0, 0]))
    body = html.split("</span></div>")[-1]
    toks = tokens_of(body)
    assert [(c, inner) for c, _, inner in toks] == [
        ("kb-sp", "<b>&lt;s&gt;</b>"), ("kb-tm", "[INST]"), ("", "x"), ("kb-ct", "\u2026")
    ]  # fmt: skip
    styles = re.findall(r'<kbd(?: class="[^"]*")? style="([^"]*)" title="#', body)
    assert len(set(styles)) == 4  # special, template, text and an empty token each look different
    assert "dashed" in styles[1] and "font-weight:600" in styles[0] and "opacity:0.5" in styles[3]
    text = prompt_text(make_view(["<s>", "[INST]", "x"], [SPECIAL, TEMPLATE, 0]))
    assert "\u27e6<s>\u27e7 [INST] x" in text


def test_placeholder_runs_collapse_into_one_box():
    texts = ["Look:"] + ["<image>"] * 16 + ["!"]
    flags = [0] + [SPECIAL] * 16 + [0]
    view = make_view(texts, flags, ids=[100] + [101] * 16 + [102], placeholder_ids=frozenset({101}))
    assert [(r.start, r.count, r.id, r.text, r.multimodal) for r in view.placeholder_runs] == [
        (1, 16, 101, "<image>", True)
    ]
    html = html_of(view)
    assert html.count("&lt;image&gt; \u00d716</b></kbd>") == 1
    assert 'title="#1\u2013#16 \u00b7 id 101 \u00b7 &quot;&lt;image&gt;&quot; \u00d7 16"' in html
    assert "\u27e6<image>\u27e7\u00d716" in prompt_text(view)


def test_context_bar_fits_and_overflows():
    fits = html_of(make_view(["a"] * 10, context_size=100, reply_tokens=20))
    widths = [float(w) for w in re.findall(r'style="display:block;height:100%;width:([0-9.]+)%', fits)]
    assert widths and abs(sum(widths) - 30.0) < 0.01  # 10 prompt + 20 reply room of 100
    assert 'class="kb-bar" style="display:flex' in fits and "70 free" in fits
    assert "background:#2471a3" in fits  # the user's colour, on the element itself
    over = make_view(["a"] * 10, context_size=20, reply_tokens=20)
    assert over.free == -10
    assert 'class="kb-bar kb-over" style="' in html_of(over) and "<b>10 over</b>" in html_of(over)
    assert "border:1px solid #c0392b" in html_of(over)
    assert "10 OVER" in prompt_text(over)
    assert 'class="kb-bar' not in html_of(make_view(["a"], context_size=None))


def test_dropped_messages_and_counts():
    dropped = [ChatMessage.user("old question"), ChatMessage.assistant("old answer")]
    view = make_view(["a", "b", "c", "d"], messages=[ChatMessage.system("s"), ChatMessage.user("u")], dropped=dropped)
    html = html_of(view)
    assert "kani leaves out 2 older message(s)" in html and "<li>user: old question</li>" in html
    assert view.counts() == {"#1 system": 2, "#2 user": 2} and view.total == 4
    assert ">#2 user</td>" in html
    assert repr(view) == "<PromptView 4 tokens of 1000, 2 messages, 2 dropped>"


def test_the_text_forms_separator_cannot_be_read_as_part_of_a_token():
    """``<think>`` in three tokens must not read as ``<|think|>`` (another token's spelling): the separator is a
    space, and no token's text shows a bare space (spaces as ``·``, other whitespace as ``⟨U+XXXX⟩``)."""
    tokens = ["<", "think", ">", "a|b", " x", "\u00a0y", "\u2009", "\t"]
    text = prompt_text(make_view(tokens))
    line = text.splitlines()[-1]  # the token list (above it: the summary and the message's preview)
    assert "<|think|>" not in line and "< think >" in line
    shown = line.split(" ")
    assert shown == ["<", "think", ">", "a|b", "\u00b7x", "\u27e8U+00A0\u27e9y", "\u27e8U+2009\u27e9", "\u2192"]


def test_plain_text_lists_tokens_and_caps_long_prompts():
    short = prompt_text(make_view(["Hello", " world"]))
    assert short.splitlines()[0] == "Prompt: demo \u00b7 chat template \u00b7 2 tokens \u00b7 1 messages"
    assert "Hello \u00b7world" in short
    long_view = make_view(["tok"] * 50, messages=[ChatMessage.user("a"), ChatMessage.user("b")])
    capped = prompt_text(long_view, max_tokens=30)
    assert "20 more tokens not listed" in capped and len(re.findall(r"(?<![.\w])tok(?!\w)", capped)) == 30


def test_hostile_strings_as_tokens_labels_and_titles(hostile, html_audit):
    messages = [ChatMessage.user(hostile), ChatMessage.assistant(hostile)]
    view = make_view(
        [hostile, "<|im_end|>", hostile, ""],
        [0, SPECIAL, 0, TEMPLATE],
        messages=messages,
        dropped=[ChatMessage.user(hostile)],
        note=hostile,
        element_id=hostile,
        placeholder_ids=frozenset({101}),
    )
    view.title = hostile
    html = html_of(view)
    assert html_audit(html, tags=TAGS, css=CSS) == []
    if "<script>" in hostile:
        assert "&lt;script&gt;" in html  # shown as text, not dropped
    plain = view._repr_mimebundle_()["text/plain"]
    assert not CONTROL.search(plain)
    cmp = PromptComparison(view, make_view([hostile + "x"], messages=messages[:1]), (hostile, hostile), hostile)
    assert html_audit(html_of(cmp), tags=TAGS, css=CSS) == []
    assert not CONTROL.search(cmp._repr_mimebundle_()["text/plain"])


def test_comparison_marks_only_the_differences():
    a = make_view(["<s>"] + ["same"] * 100 + ["A-only"], [SPECIAL] + [0] * 101)
    b = make_view(["same"] * 100 + ["B-only"])
    cmp = PromptComparison(a, b, ("left", "right"), element_id="c")
    html = html_of(cmp)
    marked = [(c, inner) for c, title, inner in tokens_of(html) if "kb-del" in c or "kb-ins" in c]
    assert marked[2:] == [("kb-sp kb-del", "<del><b>&lt;s&gt;</b></del>"), ("kb-del", "<del>A-only</del>"),
                          ("kb-ins", "<ins>B-only</ins>")]  # fmt: skip (the first two: the legend's A and B)

    assert "\u2026 60 equal tokens" in html  # a long equal run is folded
    assert html.count("<details") == 2  # the counts table and the fold
    text = cmp._repr_mimebundle_()["text/plain"]
    assert "- \u27e6<s>\u27e7" in text and "= 100 equal tokens" in text and "- A-only" in text and "+ B-only" in text
    assert not cmp.same and PromptComparison(a, a, ("x", "y")).same
