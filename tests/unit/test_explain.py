"""What the answer rests on, with the real demo model: attribution by message and by token, template counterfactuals,
their views (hostile texts inert, no <style> blocks), the one-line refusals, %%chat --why and the panel's Why?."""

from __future__ import annotations

import math

import pytest
from kani import ChatMessage

import kanibook
from kanibook.exceptions import KanibookError

from _html import parse_html  # tests/_html.py
from _waits import until  # tests/unit/_waits.py

NAME = "Zorblax"
CONVERSATION = [
    ChatMessage.user(f"My cat is called {NAME}. Remember that."),
    ChatMessage.assistant("Sure, I will remember."),
    ChatMessage.user("The weather today is sunny and warm."),
    ChatMessage.assistant("That sounds nice."),
    ChatMessage.user("What is my cat called?"),
    ChatMessage.assistant(f"Your cat is called {NAME}."),  # the reply explained: fixed text, teacher-forced
]


@pytest.fixture(scope="module")
def explained(demo_engine):
    return kanibook.explain_reply(demo_engine, messages=CONVERSATION, detail=0, budget=8, progress=False)


@pytest.fixture(scope="module")
def what_if(demo_engine, demo_model_dir):
    own = demo_engine.tokenizer.chat_template
    return kanibook.template_what_if(demo_engine, messages=CONVERSATION, greedy_tokens=4, progress=False,
                                     templates={"same template": own, "model folder": str(demo_model_dir)})


def _assert_inert(html: str) -> None:
    parsed = parse_html(html)
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "img", "iframe", "svg", "style", "object", "embed"), tag
        assert not any(name.startswith("on") for name in attrs), attrs
        assert not any((v or "").strip().lower().startswith("javascript:") for v in attrs.values()), attrs
    for raw in ("\u202e", "\x00", "\x07"):
        assert raw not in html


# ---- by message ----


def test_the_message_that_gives_the_name_carries_the_reply(explained):
    drops = {p.label: p.drop for p in explained.parts}
    assert [p.label for p in explained.parts] == ["#1 user", "#2 assistant", "#3 user", "#4 assistant", "#5 user",
                                                  "template"]  # fmt: skip
    messages = {k: v for k, v in drops.items() if k != "template"}
    assert max(messages, key=messages.get) == "#1 user"
    assert drops["#1 user"] > 5.0
    assert abs(drops["#3 user"]) < 0.2 * drops["#1 user"]  # the weather: nothing the reply uses
    assert abs(drops["#3 user"]) < 1.5
    # the name's own tokens rest on the message that gave it
    rests = explained.rests_on()
    name_tokens = [j for j, t in enumerate(explained.reply_texts) if t.strip() and t.strip() in NAME]
    assert name_tokens and all(rests[j] is not None and rests[j].label == "#1 user" for j in name_tokens)
    for p in explained.parts:
        assert len(p.drops) == len(explained.logprobs) and p.drop == pytest.approx(sum(p.drops))


def test_without_occlusion_the_scores_are_score_texts(demo_engine, explained):
    scored = kanibook.score_text(demo_engine, CONVERSATION)
    reply = explained.reply
    assert explained.logprobs == scored.scores.logprob[reply.start - 1 : reply.end - 1]
    assert "".join(explained.reply_texts) == CONVERSATION[-1].text


def test_token_detail_stays_within_its_budget_and_finds_the_name(explained):
    d = explained.detail
    assert d is not None and d.message_index == 0 and d.passes <= d.budget == 8
    assert len(d.drops) == len(d.positions) == len(d.texts)
    assert d.window == math.ceil(len(d.positions) / 8)
    top = max(range(len(d.drops)), key=d.drops.__getitem__)
    assert d.texts[top].strip() and d.texts[top].strip() in NAME  # a piece of the name causes the largest drop


def test_batched_tails_equal_single_scoring(demo_engine):
    from kanibook.scoring import score_ids, score_tails

    a = demo_engine.tokenizer("The cat sat on the mat because it was warm.")["input_ids"]
    b = demo_engine.tokenizer("Once upon a time the cat sat on the mat because it was warm.")["input_ids"]
    rows = score_tails(demo_engine.model, [a, b], 5, max_tokens=10_000)
    for ids, row in zip((a, b), rows):
        assert row == pytest.approx(score_ids(demo_engine.model, ids).logprob[-5:], abs=2e-3)


# ---- template counterfactuals ----


def test_doubled_bos_and_no_template_change_the_ids_and_the_scores(demo_engine, what_if):
    tok = demo_engine.tokenizer
    real = what_if.ids("real prompt")
    bos = tok.bos_token_id
    assert what_if.ids("doubled BOS") == [bos, *real] and real[0] == bos
    plain = what_if.ids("no chat template")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert im_start in real and im_start not in plain
    assert plain[-len(what_if.reply.reply_ids) :] == what_if.reply.reply_ids
    no_gen, r = what_if.ids("no generation prompt"), len(what_if.reply.reply_ids)
    cut = len(no_gen) - r  # the real prompt up to there, then the reply: the assistant header is what went
    assert no_gen[:cut] == real[:cut] and no_gen[cut:] == real[-r:]
    assert tok.decode(real[cut : len(real) - r]) == "<|im_start|>assistant\n"
    for name in ("doubled BOS", "no chat template", "no generation prompt"):
        assert abs(what_if.variant(name).logprob - what_if.real.logprob) > 1e-3, name
        assert what_if.variant(name).greedy
    assert not what_if.comparison("doubled BOS").same


def test_the_same_template_gives_identical_scores(what_if):
    real = what_if.real
    for name in ("same template", "model folder"):
        v = what_if.variant(name)
        assert what_if.ids(name) == what_if.ids("real prompt")
        assert v.logprobs == real.logprobs and v.perplexity == real.perplexity
    assert what_if.comparison("same template").same


def test_a_template_that_refuses_the_conversation_is_one_line(demo_engine):
    refuses = "{{ raise_exception('roles must alternate') }}"
    w = kanibook.template_what_if(demo_engine, messages=CONVERSATION[:2], templates=[refuses], greedy_tokens=0,
                                  progress=False)  # fmt: skip
    v = w.variant("template string")
    assert "refuses" in v.note and "roles must alternate" in v.note and not v.logprobs
    assert "\n" not in v.note


# ---- views ----


def test_views_are_inline_styled_and_readable(explained, what_if):
    for obj in (explained, what_if):
        bundle = obj._repr_mimebundle_()
        assert "<style" not in bundle["text/html"] and "<script" not in bundle["text/html"]
        _assert_inert(bundle["text/html"])
    html = explained._repr_mimebundle_()["text/html"]
    assert html.count('class="kb-why-part"') == len(explained.parts)
    assert html.count('class="kb-why-tok"') == len(explained.logprobs)
    assert "drop without each part" in html and "kb-why-detail" in html
    text = explained._repr_mimebundle_()["text/plain"]
    assert "#1 user" in text and "template" in text
    w_html = what_if._repr_mimebundle_()["text/html"]
    assert w_html.count("<details") == len(what_if.variants) - 1
    assert "doubled BOS" in what_if._repr_mimebundle_()["text/plain"]


HOSTILE = ["<script>alert(1)</script>", "\"'><img src=x onerror=alert(1)>", "</style><style>*{display:none}",
           "<svg onload=alert(1)>", "abc\u202edcba", "nul\x00 bell\x07", "[x](javascript:alert(1))"]


def test_hostile_texts_are_inert_in_every_view(demo_engine):
    bad = " ".join(HOSTILE)
    messages = [ChatMessage.system(bad), ChatMessage.user(f"{bad} is the word."), ChatMessage.assistant(bad)]
    ex = kanibook.explain_reply(demo_engine, messages=messages, detail=1, budget=2, progress=False)
    w = kanibook.template_what_if(demo_engine, messages=messages, greedy_tokens=1, progress=False,
                                  templates={bad: "{% for m in messages %}" + bad + "{{ m.content }}{% endfor %}"})
    for obj in (ex, w):
        html = obj._repr_mimebundle_()["text/html"]
        _assert_inert(html)
        assert "<style" not in html


# ---- one line for what cannot be explained ----


def test_what_cannot_be_explained_gets_one_line(demo_engine, monkeypatch):
    from kani.ext.multimodal_core import ImagePart
    from PIL import Image

    from kanibook.openai_compat import openai_engine
    from kanibook.conversation.session import ChatSession

    server = openai_engine("http://127.0.0.1:9/v1", model="served", tokenizer=demo_engine.tokenizer,
                           max_context_size=8192)  # an OpenAI-compatible server: it cannot score a given reply
    cases = [
        (lambda: kanibook.explain_reply(server, messages=CONVERSATION), "cannot score"),
        (lambda: kanibook.template_what_if(server, messages=CONVERSATION), "cannot score"),
        (lambda: kanibook.explain_reply(demo_engine, messages=[
            ChatMessage.user(["What is this?", ImagePart(image=Image.new("RGB", (8, 8)))]),
            ChatMessage.assistant("A square.")]), "image or a sound"),
        (lambda: kanibook.explain_reply(demo_engine, messages=CONVERSATION[:1]), "no reply"),
        (lambda: kanibook.explain_reply(demo_engine, messages=CONVERSATION, index=7), "out of range"),
        (lambda: kanibook.explain_reply(demo_engine, messages=CONVERSATION, detail=9), "detail=9"),
        (lambda: kanibook.explain_reply(demo_engine), "messages"),
        (lambda: kanibook.explain_reply(ChatSession()), "No model is loaded"),  # and it loads none
    ]
    for call, expected in cases:
        with pytest.raises(KanibookError) as e:
            call()
        assert expected in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(demo_engine, "max_context_size", 30)
    with pytest.raises(KanibookError, match="does not fit the model's context"):
        kanibook.explain_reply(demo_engine, messages=CONVERSATION, progress=False)


# ---- where people are: %%chat --why, the panel ----


def test_chat_magic_why_shows_the_view(ip, session):
    from IPython.utils.capture import capture_output

    session.kani.chat_history.extend(CONVERSATION[:4])
    with capture_output() as captured:
        ip.run_cell_magic("chat", "--why --max-new-tokens 6 --temperature 0", "What is my cat called?")
    htmls = [o.data.get("text/html", "") for o in captured.outputs]
    assert any('class="kb-why"' in h for h in htmls)
    assert not any("<style" in h for h in htmls if 'class="kb-why"' in h)


def test_panel_why_opens_the_view_under_the_reply_and_closes_it(demo_engine, run_async):
    from kani import Kani

    async def scenario():
        panel = kanibook.chat(Kani(demo_engine, chat_history=list(CONVERSATION)))
        reply_view = panel.messages[-1]
        assert reply_view.why_button.description == "Why?"
        reply_view.why_button.click()
        await until(lambda: reply_view.why_view is not None, timeout=300)
        return panel, reply_view

    panel, view = run_async(scenario())
    children = list(view.widget.children)
    assert view.why_view is not None and children.index(view.why_view) == children.index(view.body) + 1
    assert "kb-why-view" in view.why_view._dom_classes and 'class="kb-why"' in view.why_view.value
    assert panel.status == "ready"
    view.why_button.click()  # a second click closes it
    assert view.why_view is None and all("kb-why-view" not in getattr(w, "_dom_classes", ()) for w in
                                         view.widget.children)  # fmt: skip
    assert [v.why_button is not None for v in panel.messages if v.role == "assistant"] == [True] * 3
    panel.close()
