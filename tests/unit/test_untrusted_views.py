"""Every view as a saved notebook shows it to someone else: untrusted in JupyterLab / Notebook 7 (``<style>`` removed,
inline styles kept when their properties are on JupyterLab's allow-list) and on GitHub (html-pipeline's
SanitizationFilter: no ``style``, no ``class``, no ``<span>``; its allow-list is written below as data and applied with
``nh3``). Real prompt views come from a tiny Llama-2-style tokenizer the rest of the suite did not grow up with;
probability and lab views from data.
"""

from __future__ import annotations

import html as html_lib
import re

import nh3
import pytest
from kani import ChatMessage

import kanibook
from kanibook.probs.record import Alternative, Distribution, ReplyProbs, TokenProb
from kanibook.quant.report import QuantReport
from kanibook.render import probs as render_probs
from kanibook.render import quant as render_quant
from kanibook.render import safe

# GitHub's allow-list for rendered Markdown and notebooks (html-pipeline's SanitizationFilter WHITELIST)
GITHUB_ELEMENTS = set(
    """h1 h2 h3 h4 h5 h6 h7 h8 br b i strong em a pre code img tt div ins del sup sub p ol ul table thead tbody tfoot
    blockquote dl dt dd kbd q samp var hr ruby rt rp li tr td th s strike summary details""".split()
)
GITHUB_ATTRIBUTES = {
    "a": {"href"}, "img": {"src", "longdesc"}, "div": {"itemscope", "itemtype"}, "blockquote": {"cite"},
    "del": {"cite"}, "ins": {"cite"}, "q": {"cite"},
    "*": set(
        """abbr accept accept-charset accesskey action align alt axis border cellpadding cellspacing char charoff
        charset checked clear cols colspan color compact coords datetime dir disabled enctype for frame headers height
        hreflang hspace ismap label lang maxlength media method multiple name nohref noshade nowrap open prompt readonly
        rel rev rows rowspan rules scope selected shape size span start summary tabindex target title type usemap valign
        value vspace width itemprop""".split()
    ),
}  # fmt: skip
HOSTILE = '<script>alert(1)</script>"\'><img src=x onerror=alert(1)></style>\u202e'


def github(html: str) -> str:
    """What GitHub shows of ``html``: its elements and attributes only, ``<script>``/``<style>`` with their content gone."""
    return nh3.clean(html, tags=GITHUB_ELEMENTS, attributes=GITHUB_ATTRIBUTES, clean_content_tags={"script", "style"},
                     link_rel=None, strip_comments=True)  # fmt: skip


def untrusted_jupyter(html: str) -> str:
    """What JupyterLab / Notebook 7 keep of an untrusted output, for what these views use: ``<style>`` elements go;
    a style declaration whose property is not on the allow-list goes (the browser test checks the real thing)."""
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)

    def keep(match: re.Match) -> str:
        decls = html_lib.unescape(match.group(2)).split(";")
        kept = [d for d in decls if d.split(":", 1)[0].strip() in safe.UNTRUSTED_CSS]
        return f"{match.group(1)}{safe.attr(';'.join(kept))}{match.group(1)[-1]}"

    return re.sub(r"""(style=["'])([^"']*)["']""", keep, html)


def styles(html: str) -> list[str]:
    return re.findall(r"""style=["']([^"']*)["']""", html)


def test_css_takes_only_what_untrusted_notebooks_keep():
    assert safe.css(border_left="3px solid #2471a3", opacity="0.5") == "border-left:3px solid #2471a3;opacity:0.5"
    for bad in ({"position": "sticky"}, {"flex_shrink": "0"}, {"color": "var(--jp-x)"}, {"opacity": ".5"},
                {"overflow_wrap": "anywhere"}, {"color": "red;background:url(x)"}, {"color": 'red" onclick="x'}):  # fmt: skip
        with pytest.raises(ValueError, match="untrusted notebooks drop"):
            safe.css(**bad)


@pytest.fixture(scope="module")
def prompt_html(tiny_llama2_dir) -> str:
    messages = [ChatMessage.system("Be brief."), ChatMessage.user("Hello there, friend"), ChatMessage.assistant("Hi")]
    return kanibook.show_prompt(str(tiny_llama2_dir), messages)._repr_mimebundle_()["text/html"]


def test_prompt_view_untrusted_keeps_boxes_colours_and_special_tokens(prompt_html):
    shown = untrusted_jupyter(prompt_html)
    assert shown == re.sub(r"<style>.*?</style>", "", prompt_html, flags=re.S)  # no declaration lost
    boxes = re.findall(r'<kbd(?: class="([^"]*)")? style="([^"]*)" title="#\d', shown)
    assert len(boxes) > 10 and all("border:1px" in s and "display:inline" in s for _, s in boxes)
    special = {s for c, s in boxes if "kb-sp" in c}
    text = {s for c, s in boxes if c == ""}
    assert special and text and special.isdisjoint(text)  # <s>, [INST] look different from the messages' text
    roles = re.findall(r'class="kb-seg kb-r-(\w+)" style="border-left:3px solid (#\w+)', shown)
    assert {r for r, _ in roles} >= {"system", "user", "assistant"} and len({c for _, c in roles}) >= 3
    assert re.search(r'class="kb-bar" style="display:flex[^"]*"><span class="kb-r-\w+" style="display:block', shown)


def test_prompt_view_on_github_reads_as_boxes_with_bold_specials(prompt_html):
    shown = github(prompt_html)
    assert "style=" not in shown and "class=" not in shown and "<span" not in shown
    tokens = re.findall(r"<kbd title=\"#\d+[^\"]*\">(.*?)</kbd>", shown, re.S)
    assert len(tokens) > 10 and any(t.startswith("<b>") for t in tokens) and any("<b>" not in t for t in tokens)
    assert "<kbd title=\"a special token\"><b>special</b></kbd> · <kbd" in shown  # legend items apart


def test_comparison_strikes_removed_tokens_everywhere(tiny_llama2_dir):
    from kanibook.prompt.view import PromptComparison

    with_system = [ChatMessage.system("Be brief."), ChatMessage.user("Hello there")]
    a = kanibook.show_prompt(str(tiny_llama2_dir), with_system)
    b = kanibook.show_prompt(str(tiny_llama2_dir), with_system[1:])
    html = PromptComparison(a, b, ("with system", "without"))._repr_mimebundle_()["text/html"]
    for shown in (untrusted_jupyter(html), github(html)):
        removed = re.findall(r"<kbd[^>]*><del>(.*?)</del></kbd>", shown, re.S)
        assert len(removed) > 2 and "brief" in "".join(removed)  # struck through, in boxes
    assert re.search(r'<kbd class="kb-del" style="[^"]*background:#e74c3c33', untrusted_jupyter(html))


def _probs(ps: list[float]) -> ReplyProbs:
    alts = (Alternative(1, "a", 0.5), Alternative(2, "b", 0.2))
    return ReplyProbs([TokenProb(i, i + 10, f" w{i}", Distribution(p, 0, 0.5, alts), None) for i, p in enumerate(ps)])


def test_probability_view_keeps_colours_untrusted_and_bold_unsure_tokens_on_github():
    ps = [0.99, 0.7, 0.45, 0.2, 0.05]
    html = render_probs.reply_html(_probs(ps))
    shown = untrusted_jupyter(html)
    backgrounds = re.findall(r'class="kb-tok kb-p(\d) kb-t\d+" style="background:(#\w+);color:(#\w+)', shown)
    assert [(int(b), bg) for b, bg, _ in backgrounds] == [
        (render_probs.bin_of(p), render_probs.BINS[render_probs.bin_of(p)][1]) for p in ps
    ]
    chips = re.findall(r'<kbd class="kb-p\d" style="display:inline-block;background:(#\w+)', shown)
    assert chips == [bg for _, bg, _, _ in render_probs.BINS]
    gh = github(html)
    assert "style=" not in gh
    assert re.findall(r"<b> w(\d)</b>", gh) == ["3", "4"]  # below 30%: bold where colours cannot go
    legend = re.sub(r"<[^>]+>", "", gh.split("probability of the chosen token:")[1])
    assert "≥ 90% 60–90% 30–60% 10–30% &lt; 10%" in legend  # chips apart, not "≥ 90%60–90%..."


def _report(kls: dict[str, list[float]], start: int = 1_500_000_000) -> QuantReport:
    n = len(next(iter(kls.values())))
    rows = []
    for i, (label, kl) in enumerate(kls.items()):
        rows.append({
            "label": label, "reference": i == 0, "available": True, "reason": None, "description": label,
            "weights_bytes": 500e6 / (i + 1), "weights_estimate_bytes": 500e6 / (i + 1),
            "peak_memory_bytes": start + 600e6 / (i + 1), "load_s": 1.0, "ttft_s": 0.1, "decode_tok_s": 10.0 + i,
            "ppl": 5.0 + i, "ppl_ratio": 1.0 + i / 10, "kld_mean": sum(kl) / n, "kld_err": 0.001, "kld_median": 0.1,
            "kld_p90": 0.2, "kld_p95": 0.3, "kld_p99": 0.4, "kld_max": max(kl), "same_top_pct": 100.0 - i,
            "delta_p_mean_pct": 0.1, "delta_p_err_pct": 0.01, "delta_p_rms_pct": 0.2, "flips": 1,
        })  # fmt: skip
    tokens = ["The"] + [" token"] * n
    top = [[["x", 0.5]] for _ in range(n)]
    positions = {label: {"kl": kl, "top": top, "flips": [[3, 1, 2]] if i else []}
                 for i, (label, kl) in enumerate(kls.items())}  # fmt: skip
    return QuantReport("tiny/model", "cpu", rows, tokens=tokens, positions=positions, start_memory_bytes=start,
                       machine={"device": "CPU", "processor": "x", "cores": 2})  # fmt: skip


def test_lab_report_fits_wraps_and_spreads_its_colours():
    import random

    rng = random.Random(0)
    n = 300
    report = _report({"fp32": [0.0] * n, "nf4": [rng.uniform(0.05, 0.9) for _ in range(n)],
                      "int8": [rng.uniform(0.001, 0.05) for _ in range(n)]})  # fmt: skip
    html = render_quant.report_html(report, plots=False)
    assert untrusted_jupyter(html) == html  # nothing it uses is dropped untrusted
    first = re.search(r'<table class="kb-quant-table".*?</table>', html, re.S).group(0)
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", first)
    assert heads == ["setting", "weights", "KL mean", "same top %", "PPL ratio", "tokens/s", "peak rise"]
    more = re.findall(r'<table class="kb-quant-table-more".*?</table>', html, re.S)
    assert len(more) == 3 and all(re.findall(r"<th[^>]*>([^<]*)</th>", t)[0] == "setting" for t in more)
    assert all(len(re.findall(r"<th ", t)) <= 6 for t in more)  # each fits a notebook's width
    shown = {c[1] for t in (first, *more) for c in _columns_in(t)}
    assert shown >= {"KL p99", "Δp RMS %", "top flips", "load s", "estimate", "peak (process)"}  # every column
    # peak memory: the rise above the start, the start said, not ranked
    assert "600 MB" in first and "minus the 1.50 GB the process held before the first load" in html
    assert '<strong class="kb-best">600' not in first
    # the strips wrap: break opportunities between tokens, long tokens may break
    strip = re.search(r"class='kb-quant-toks' style='([^']*)'>(.*?)</div>", html, re.S)
    assert "word-break:break-all" in strip.group(1) and strip.group(2).count("<wbr>") == n
    # the colour scale spreads over the values shown: nf4's tokens are not all one saturated red
    # (a run of tokens of one colour shares a span: count every token of the run)
    runs = re.findall(r"rgba\(220,40,40,([0-9.]+)\)[^>]*>(.*?)</span>", html.split("nf4: mean KL")[1].split("</details>")[0])
    alphas = [float(a) for a, text in runs for _ in range(text.count("<wbr>") + 1)]
    assert len({round(a, 1) for a in alphas}) >= 5 and sum(a >= 0.99 for a in alphas) < n / 5


def _columns_in(table: str) -> list[tuple[int, str]]:
    return list(enumerate(re.findall(r"<th[^>]*>([^<]*)</th>", table)))


def test_lab_report_hostile_text_stays_inert(html_audit):
    report = _report({"fp32": [0.0] * 5, HOSTILE: [0.1] * 5})
    report.tokens[2] = HOSTILE
    report.rows[1]["description"] = HOSTILE
    report.model = HOSTILE
    html = render_quant.report_html(report, plots=False)
    tags = {"div", "table", "thead", "tbody", "tr", "th", "td", "em", "strong", "details", "summary", "span", "wbr"}
    assert html_audit(html, tags=tags) == []
    assert "&lt;script&gt;" in html


def test_plot_labels_do_not_collide():
    from kanibook.render.plot_labels import label_offsets
    from kanibook.render.quant import report_figure

    report = _report({"fp32": [0.0] * 5, "fp4": [0.3] * 5, "fp4-dq": [0.3] * 5, "nf4": [0.2] * 5, "nf4-dq": [0.2] * 5})
    for r in report.rows[1:]:  # two pairs at the same place, as fp4/fp4-dq and nf4/nf4-dq are
        r["weights_bytes"] = 170e6 if r["label"].startswith("fp4") else 168e6
    fig = report_figure(report)
    ax = fig.axes[0]
    points = [(r["label"], r["weights_bytes"] / 1e6, r["kld_mean"]) for r in report.rows]
    offsets = dict(zip((p[0] for p in points), label_offsets(ax, points, 300, 240)))
    assert offsets["fp4"] != offsets["fp4-dq"] and offsets["nf4"] != offsets["nf4-dq"]
    texts = [t for t in ax.texts]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
