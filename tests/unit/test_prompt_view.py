"""show_prompt / compare_prompts: the ids are build_prompt's, every token is attributed to the right message."""

from __future__ import annotations

import asyncio
import re

import pytest
from kani import ChatMessage, ChatRole, Kani, PromptPipeline, ToolCall

import kanibook
from kanibook.prompt.segment import segment
from kanibook.exceptions import KanibookError
from kanibook.render.tokens import CSS

TAGS = {"div", "span", "kbd", "del", "ins", "style", "details", "summary", "table", "tr", "td", "th", "b", "ol",
        "ul", "li"}  # fmt: skip

#: A hand-written pipeline for the demo model: no special tokens at all, unlike its ChatML template.
PIPELINE_KW = dict(
    system_prefix="### System:\n", system_suffix="\n\n", user_prefix="### User:\n", user_suffix="\n\n",
    assistant_prefix="### Assistant:\n", assistant_suffix="\n\n", function_prefix="### Tool:\n",
    function_suffix="\n\n", generation_suffix="### Assistant:\n",
)  # fmt: skip


def tool_conversation() -> list[ChatMessage]:
    call = ToolCall.from_function("get_weather", city="Paris")
    return [
        ChatMessage.system("You are a terse weather bot."),
        ChatMessage.user("What is the weather in Paris?"),
        ChatMessage.assistant(None, tool_calls=[call]),
        ChatMessage.function("get_weather", "Sunny, 21 degrees", call.id),
        ChatMessage.assistant("It is sunny and 21 degrees in Paris."),
        ChatMessage.user("Thanks! And tomorrow?"),
    ]


def build_ids(engine, messages, functions=None) -> list[int]:
    """What the model receives: the ids of engine.build_prompt, as kani's generate path reads them."""
    return engine.build_prompt(messages, functions)["input_ids"][0].tolist()


def segment_text(view, seg) -> str:
    return "".join(t.text for t in view.tokens[seg.start : seg.end])


def own_text(view, seg) -> str:
    return "".join(t.text for t in view.tokens[seg.start : seg.end] if not t.is_template)


def check_invariants(view):
    """Counts add up, segments tile the tokens in order, each token's segment index matches."""
    assert sum(s.count for s in view.segments) == view.total == len(view.token_ids)
    pos = 0
    for i, s in enumerate(view.segments):
        assert s.start == pos and s.end >= s.start
        assert all(t.segment == i for t in view.tokens[s.start : s.end])
        pos = s.end
    assert pos == view.total
    order = [s.message_index for s in view.segments if s.message_index is not None]
    if not any(n.kind in ("merged", "moved", "repeated") for n in view.template_notes):
        assert order == list(range(len(view.messages)))
    else:  # a message inside another's turn: that turn's template text before and after it
        assert sorted(set(order)) == list(range(len(view.messages)))


@pytest.fixture(scope="module")
def pipeline_engine(demo_model_dir):
    """The demo model with a hand-written kani PromptPipeline instead of its chat template."""
    pipe = PromptPipeline().conversation_fmt(**PIPELINE_KW)
    return kanibook.load(demo_model_dir, prompt_pipeline=pipe)


@pytest.fixture(scope="module")
def llama2_engine(tiny_llama2_dir):
    return kanibook.load(tiny_llama2_dir)


# ---------------------------------------------------------------- the ids are exactly build_prompt's


def test_ids_are_build_prompt_ids_demo_template(demo_engine):
    messages = tool_conversation()
    view = kanibook.show_prompt(demo_engine, messages)
    assert view.token_ids == build_ids(demo_engine, messages)
    assert view.text == demo_engine.pipeline(messages)  # every character of the prompt, once, in order
    assert [t.id for t in view.tokens] == view.token_ids and [t.position for t in view.tokens] == list(
        range(view.total)
    )
    special = set(demo_engine.tokenizer.all_special_ids)
    assert [t.is_special for t in view.tokens] == [i in special for i in view.token_ids]
    check_invariants(view)


def test_ids_are_build_prompt_ids_custom_pipeline(pipeline_engine):
    messages = [m for m in tool_conversation() if m.role != ChatRole.FUNCTION and m.text]
    view = kanibook.show_prompt(pipeline_engine, messages)
    assert view.token_ids == build_ids(pipeline_engine, messages)
    assert view.text == pipeline_engine.pipeline(messages)
    check_invariants(view)


def test_ids_are_build_prompt_ids_llama2_template(llama2_engine):
    messages = [
        ChatMessage.system("You are terse."),
        ChatMessage.user("Weather in Paris?"),
        ChatMessage.assistant("It is sunny."),
        ChatMessage.user("Thanks!"),
    ]
    view = kanibook.show_prompt(llama2_engine, messages)
    assert view.token_ids == build_ids(llama2_engine, messages)
    assert "[INST]" in view.text and view.text.count("<s>") == 2
    check_invariants(view)
    # Llama 2 puts the system text inside the first user turn: the turn's header and <</SYS>> are the user's
    assert [n.text for n in view.template_notes] == ["#1 system: merged into #2 user's turn"]
    assert [s.message_index for s in view.segments] == [None, 1, 0, 1, 2, 3]  # the BOS: before the first message
    assert segment_text(view, view.segments[0]) == "<s>"
    assert segment_text(view, view.segments[1]) == "[INST] <<SYS>>\n"
    for k, message in enumerate(messages):
        segs = view.segments_of(k)
        assert message.text in "".join(segment_text(view, seg) for seg in segs)
        assert "".join(own_text(view, seg) for seg in segs).strip() == message.text  # " Thanks": a leading space
    assert segment_text(view, view.segments[-1]).endswith("Thanks! [/INST]")


def test_prompt_returned_as_a_string_is_tokenized_like_kani(demo_engine, monkeypatch):
    """An engine whose build_prompt returns text: kani tokenizes it in _get_generate_args; so does the view."""
    messages = [ChatMessage.user("Hello there")]
    expected = build_ids(demo_engine, messages)
    monkeypatch.setattr(demo_engine, "build_prompt", lambda msgs, fns=None: demo_engine.pipeline(msgs, fns))
    view = kanibook.show_prompt(demo_engine, messages)
    assert view.token_ids == expected
    check_invariants(view)


# ---------------------------------------------------------------- segmentation


def test_segmentation_system_user_assistant_function(demo_engine):
    messages = tool_conversation()
    view = kanibook.show_prompt(demo_engine, messages)
    check_invariants(view)
    assert [s.role for s in view.segments] == [m.role.value for m in messages] + ["template"]
    by_message = [s for s in view.segments if s.message_index is not None]
    for seg, message in zip(by_message, messages):
        text = segment_text(view, seg)
        role = {"function": "tool"}.get(message.role.value, message.role.value)  # kani's name for the template
        # the demo template (ChatML): each message is exactly its header, its text and its end marker
        assert text == f"<|im_start|>{role}\n{message.text or ''}<|im_end|>\n"
        assert own_text(view, seg) == (message.text or "")
        assert seg.content_tokens == sum(not t.is_template for t in view.tokens[seg.start : seg.end])
    assert by_message[2].content_tokens == 0  # the tool call: this template renders no text for it
    assert segment_text(view, view.segments[-1]) == "<|im_start|>assistant\n"
    assert view.segments[-1].label == "generation prompt"


def test_default_system_message_is_template_text(demo_engine):
    view = kanibook.show_prompt(demo_engine, [ChatMessage.user("Hi there")])
    check_invariants(view)
    first, user, gen = view.segments
    assert first.role == "template" and first.message_index is None
    assert "You are a helpful AI assistant" in segment_text(view, first)  # what the demo template adds
    assert segment_text(view, user) == "<|im_start|>user\nHi there<|im_end|>\n"
    assert segment_text(view, gen) == "<|im_start|>assistant\n"


def test_segmentation_custom_pipeline_without_special_tokens(pipeline_engine):
    messages = [
        ChatMessage.system("Be brief."),
        ChatMessage.user("Name a colour."),
        ChatMessage.assistant("Blue."),
        ChatMessage.user("Another?"),
    ]
    view = kanibook.show_prompt(pipeline_engine, messages)
    check_invariants(view)
    prefix = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n"}
    for seg, message in zip([s for s in view.segments if s.message_index is not None], messages):
        assert segment_text(view, seg) == f"{prefix[message.role.value]}{message.text}\n\n"
    assert segment_text(view, view.segments[-1]) == "### Assistant:\n"


def test_tiny_messages_equal_to_template_words(demo_engine):
    """Contents like "user" or "a" also occur in the scaffolding: the marker render still places them right."""
    messages = [ChatMessage.user("user"), ChatMessage.assistant("a"), ChatMessage.user("<|im_start|>")]
    view = kanibook.show_prompt(demo_engine, messages)
    check_invariants(view)
    segs = [s for s in view.segments if s.message_index is not None]
    assert [own_text(view, s) for s in segs] == ["user", "a", "<|im_start|>"]
    hostile = view.tokens[segs[2].start : segs[2].end]
    assert any(t.is_special and not t.is_template for t in hostile)  # an injected special token, shown as such


def test_tokens_merging_across_message_boundaries(pipeline_engine):
    """No separator at all between messages: BPE merges across them. Every token still lands in one segment."""
    pipe = PromptPipeline().conversation_fmt(sep="", generation_suffix="")
    engine = pipeline_engine
    original = engine.pipeline
    engine.pipeline = pipe
    try:
        messages = [ChatMessage.user("inter"), ChatMessage.assistant("national"), ChatMessage.user("ly")]
        view = kanibook.show_prompt(engine, messages)
    finally:
        engine.pipeline = original
    assert view.text == "internationally"
    assert view.token_ids == engine.tokenizer("internationally", add_special_tokens=False)["input_ids"]
    check_invariants(view)
    assert view.total < 4  # at least one token spans two messages


def _chatml(messages, default_system=True) -> str:
    out = []
    if default_system and (not messages or messages[0].role != ChatRole.SYSTEM):
        out.append("<|im_start|>system\nDEFAULT<|im_end|>\n")
    out += [f"<|im_start|>{m.role.value}\n{m.text}<|im_end|>\n" for m in messages]
    return "".join(out) + "<|im_start|>assistant\n"


EOS = re.compile(re.escape("<|im_end|>"))
SPECIAL = re.compile("|".join(map(re.escape, ["<|im_start|>", "<|im_end|>"])))


def _pieces(text, bounds):
    return [text[: bounds[0]]] + [text[a:b] for a, b in zip(bounds, bounds[1:])] + [text[bounds[-1] :]]


CONVERSATION = [
    ChatMessage.system("sys."),
    ChatMessage.user("hello."),
    ChatMessage.assistant("hi."),
    ChatMessage.user("bye."),
]


@pytest.mark.parametrize("refuse_prefixes", [False, True])
def test_segment_template_that_rewrites_earlier_parts(refuse_prefixes):
    """Prefix renderings that are not prefixes (a message count at the top), or that the template refuses."""

    def render(msgs):
        if refuse_prefixes and len(msgs) < len(CONVERSATION) and not any("\ue000" in (m.text or "") for m in msgs):
            return None
        return f"[{len(msgs)} messages]\n" + _chatml(msgs)

    text = render(CONVERSATION)
    bounds, spans = segment(text, CONVERSATION, render, EOS, SPECIAL)
    pieces = _pieces(text, bounds)
    assert pieces[2:-1] == [f"<|im_start|>{m.role.value}\n{m.text}<|im_end|>\n" for m in CONVERSATION[1:]]
    assert pieces[-1] == "<|im_start|>assistant\n"
    assert [text[a:b] for a, b in spans] == [m.text for m in CONVERSATION]
    if refuse_prefixes:  # nothing says whether "[4 messages]" belongs to the system message: it stays with it
        assert pieces[0] + pieces[1] == "[4 messages]\n<|im_start|>system\nsys.<|im_end|>\n"
    else:
        assert pieces[:2] == ["[4 messages]\n", "<|im_start|>system\nsys.<|im_end|>\n"]


def test_segment_plain_text_template_without_newlines():
    """No special tokens, no newlines: the generation prompt shares its start with every header."""

    def render(msgs):
        return "".join(f"### {m.role.value}: {m.text} " for m in msgs) + "### assistant:"

    text = render(CONVERSATION)
    bounds, _ = segment(text, CONVERSATION, render, None, None)
    pieces = _pieces(text, bounds)
    assert pieces[1:-1] == [f"### {m.role.value}: {m.text} " for m in CONVERSATION]
    assert pieces[0] == "" and pieces[-1] == "### assistant:"


def test_segment_many_messages_renders_few_prefixes():
    """The scaffolding repeats: a long conversation needs a handful of renders, not one per message."""
    messages = [ChatMessage.system("s")] + [
        (ChatMessage.user if i % 2 == 0 else ChatMessage.assistant)(f"message number {i}.") for i in range(200)
    ]
    calls = []

    def render(msgs):
        calls.append(len(msgs))
        return _chatml(msgs)

    text = render(messages)
    calls.clear()
    bounds, _ = segment(text, messages, render, EOS, SPECIAL)
    assert len(calls) <= 8, calls
    pieces = _pieces(text, bounds)
    assert pieces[1:-1] == [f"<|im_start|>{m.role.value}\n{m.text}<|im_end|>\n" for m in messages]


# ---------------------------------------------------------------- context, truncation


def test_context_bar_and_reply_room(demo_engine):
    view = kanibook.show_prompt(demo_engine, [ChatMessage.user("Hi")], max_new_tokens=100)
    assert view.context_size == demo_engine.max_context_size
    assert view.reply_tokens == 100 and view.free == view.context_size - view.total - 100
    html = view._repr_mimebundle_()["text/html"]
    assert 'class="kb-bar"' in html and f"reply room {100:,}" in html
    default = kanibook.show_prompt(demo_engine, [ChatMessage.user("Hi")])
    assert default.reply_tokens == min(demo_engine.max_context_size // 10, 8192)  # kani's default


def long_history(n: int = 8) -> list[ChatMessage]:
    return [
        ChatMessage.user(f"Question {i}: tell me about foxes and their dens in some detail.")
        if i % 2 == 0
        else ChatMessage.assistant(f"Answer {i}: foxes live in dens they dig; they are clever animals.")
        for i in range(n)
    ]


def test_kani_view_is_what_kani_sends(demo_engine, run_async):
    ai = Kani(demo_engine, system_prompt="Be brief.", chat_history=long_history(4))
    view = kanibook.show_prompt(ai)
    sent = run_async(ai.get_prompt())
    assert view.messages == sent and not view.dropped
    assert view.token_ids == build_ids(demo_engine, sent, ai.get_enabled_functions())
    assert view.segments[0].role == "system" and view.reply_tokens == ai.desired_response_tokens


def test_kani_prompt_is_built_once(demo_engine, monkeypatch):
    """kani counts the tokens of what it sends by building it; the view reuses that build instead of a second one."""
    calls = []
    original = demo_engine.build_prompt
    monkeypatch.setattr(demo_engine, "build_prompt", lambda *a, **k: calls.append(1) or original(*a, **k))
    view = kanibook.show_prompt(Kani(demo_engine, chat_history=long_history(4)))
    assert len(calls) == 1 and view.total > 0


def test_truncation_shows_what_kani_drops(demo_engine, run_async):
    history = long_history(8)
    ai = Kani(demo_engine, system_prompt="Be brief.", chat_history=history, desired_response_tokens=20)
    ai.max_context_size = 150  # kani's own limit: it keeps what fits in 150 - 20 tokens
    before = list(ai.chat_history)
    view = kanibook.show_prompt(ai)
    sent = run_async(ai.get_prompt())
    assert 0 < len(view.dropped) < len(history)
    assert view.messages == sent and view.dropped == history[: len(history) - (len(sent) - 1)]
    assert view.token_ids == build_ids(demo_engine, sent)
    assert view.total <= 150 - 20 and view.context_size == 150
    assert ai.chat_history == before and ai.max_context_size == 150  # the caller's Kani is untouched
    bundle = view._repr_mimebundle_()
    assert f"leaves out {len(view.dropped)} older message" in bundle["text/html"]
    assert f"leaves out {len(view.dropped)} older message" in bundle["text/plain"]
    # more room for the reply: kani drops more
    tighter = kanibook.show_prompt(ai, max_new_tokens=60)
    assert len(tighter.dropped) > len(view.dropped) and tighter.total <= 150 - 60


def test_overflow_when_kani_cannot_fit(demo_engine):
    ai = Kani(demo_engine, system_prompt="Be brief. " * 40, chat_history=long_history(2), desired_response_tokens=20)
    ai.max_context_size = 60
    view = kanibook.show_prompt(ai)
    assert view.note.startswith("kani cannot fit this conversation") and view.free < 0
    html = view._repr_mimebundle_()["text/html"]
    assert "kb-over" in html and "over</b>" in html


def test_works_inside_a_running_event_loop(demo_engine):
    """In a notebook the kernel's loop is running; kani's async get_prompt still gives an answer."""
    ai = Kani(demo_engine, chat_history=long_history(2))

    async def in_loop():
        return kanibook.show_prompt(ai)

    view = asyncio.run(in_loop())
    assert view.total > 0 and len(view.messages) == 2


def test_clear_errors(demo_engine, llama2_engine):
    with pytest.raises(KanibookError, match=r"refuses message #2 \(user\): Conversation roles must alternate.*fix=True"):
        kanibook.show_prompt(llama2_engine, [ChatMessage.user("a"), ChatMessage.user("b")])  # roles must alternate
    with pytest.raises(KanibookError, match="the conversation is empty"):
        kanibook.show_prompt(Kani(demo_engine))
    with pytest.raises(KanibookError, match="Pass the conversation"):
        kanibook.show_prompt(demo_engine)
    with pytest.raises(KanibookError, match="needs a local engine"):
        kanibook.show_prompt(object(), [ChatMessage.user("x")])
    with pytest.raises(KanibookError, match="messages"):
        kanibook.compare_prompts(demo_engine, demo_engine)


# ---------------------------------------------------------------- compare


def test_compare_template_vs_pipeline(demo_engine, pipeline_engine):
    messages = [ChatMessage.system("Be brief."), ChatMessage.user("Name a colour.")]
    cmp = kanibook.compare_prompts(demo_engine, pipeline_engine, messages, element_id="cmp")
    assert cmp.a.token_ids == build_ids(demo_engine, messages)
    assert cmp.b.token_ids == build_ids(pipeline_engine, messages)
    assert not cmp.same
    # the opcodes rebuild both token sequences
    a_seen, b_seen = [], []
    for tag, i1, i2, j1, j2 in cmp.opcodes:
        a_seen += range(i1, i2)
        b_seen += range(j1, j2)
        if tag == "equal":
            assert cmp.a.token_ids[i1:i2] == cmp.b.token_ids[j1:j2]
    assert a_seen == list(range(cmp.a.total)) and b_seen == list(range(cmp.b.total))
    html = cmp._repr_mimebundle_()["text/html"]
    assert html.count('class="kb-sp kb-del"') >= 2  # ChatML's special tokens exist only in A
    assert 'class="kb-ins"' in html and "Be" in html
    text = cmp._repr_mimebundle_()["text/plain"]
    assert "- \u27e6<|im_start|>\u27e7" in text and "+ ###" in text


def test_compare_same_pipeline_is_identical(demo_engine):
    ai = Kani(demo_engine, system_prompt="Be brief.", chat_history=long_history(2))
    cmp = kanibook.compare_prompts(ai, demo_engine)
    assert cmp.same and cmp.a.token_ids == cmp.b.token_ids
    assert cmp.a.messages == ai.always_included_messages + ai.chat_history
    html = cmp._repr_mimebundle_()["text/html"]
    assert "identical" in html and not re.search(r'class="[^"]*kb-(del|ins)[^"]*" title=', html)


# ---------------------------------------------------------------- hostile text


def hostile_conversation(hostile: str) -> list[ChatMessage]:
    call = ToolCall.from_function("lookup", query=hostile)
    return [
        ChatMessage.system(hostile),
        ChatMessage.user(hostile),
        ChatMessage.assistant(None, tool_calls=[call]),
        ChatMessage.function(hostile, f'{{"result": "{hostile}"}}', call.id),
        ChatMessage.assistant(hostile),
        ChatMessage.user("</script>" + hostile),
    ]


def test_hostile_messages_render_inert(demo_engine, hostile, html_audit):
    messages = hostile_conversation(hostile)
    view = kanibook.show_prompt(demo_engine, messages, element_id=f"id-{hostile}")
    assert view.token_ids == build_ids(demo_engine, messages)
    check_invariants(view)
    bundle = view._repr_mimebundle_()
    assert html_audit(bundle["text/html"], tags=TAGS, css=CSS) == []
    plain = bundle["text/plain"]
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", plain)
    cmp = kanibook.compare_prompts(demo_engine, demo_engine, messages, labels=(hostile, hostile + "!"))
    assert html_audit(cmp._repr_mimebundle_()["text/html"], tags=TAGS, css=CSS) == []
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e]", cmp._repr_mimebundle_()["text/plain"])
