"""The prompt view on templates that merge, move, drop or rewrite messages, add text of their own, or end turns with a
token that is not the eos; through kani's build_prompt (a tiny random-weight Llama per template, loaded with
kanibook.load) and from the tokenizer alone.

Every template here was written for these tests (short Jinja mimicking one behaviour of a real family's template:
Gemma's system merged into the first user turn, Mistral-Nemo's system inside the last user turn, DeepSeek-R1's
reasoning stripped from earlier replies, Qwen's default system block, Llama 3.1's date and tool definitions in a user
turn, Phi-3's ``<|end|>``); no real template text is copied.
"""

from __future__ import annotations

import datetime
import re

import pytest
from kani import AIFunction, ChatMessage

import kanibook
from kanibook.exceptions import KanibookError
from kanibook.render.tokens import CSS

TAGS = {"div", "span", "kbd", "del", "ins", "style", "details", "summary", "table", "tr", "td", "th", "b", "ol",
        "ul", "li"}  # fmt: skip

CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TEMPLATES = {
    # system merged into the first user turn; turns end with <end_of_turn> (not the eos)
    "merged_first": (
        ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>",
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
        "{% if loop.first and sys %}{{ sys }}\n\n{% endif %}{{ m.content }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    ),
    # system text placed inside the LAST user turn
    "system_in_last_user": (
        ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>",
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}{% if m.role == 'user' %}{% if loop.last and sys %}[INST]{{ sys }}\n\n{{ m.content }}"
        "[/INST]{% else %}[INST]{{ m.content }}[/INST]{% endif %}{% else %}{{ m.content }}{{ eos_token }}{% endif %}"
        "{% endfor %}",
    ),
    # system messages silently dropped
    "drops_system": (
        CHATML, "<|endoftext|>", "<|endoftext|>",
        "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ),
    # reasoning stripped from earlier assistant turns; the system text rendered bare
    "strips_reasoning": (
        ["<|bos|>", "<|eos|>", "<|User|>", "<|Assistant|>"], "<|bos|>", "<|eos|>",
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}"
        "{% elif m.role == 'user' %}<|User|>{{ m.content }}{% else %}{% set c = m.content %}"
        "{% if not loop.last %}{% set c = c.split('</think>')[-1] | trim %}{% endif %}"
        "<|Assistant|>{{ c }}<|eos|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}",
    ),
    # a default system block with today's date when the conversation has no system message
    "default_system_date": (
        CHATML, "<|endoftext|>", "<|endoftext|>",
        "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are a helpful assistant. Today is "
        "{{ strftime_now('%d %B %Y') }}.<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    ),
    # tool definitions injected into the last user turn; turns end with <|eot_id|> (not the eos)
    "tools_in_user": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|end_of_text|>",
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
        "{% if tools and loop.last and m.role == 'user' %}You may call these functions:\n"
        "{% for t in tools %}{{ t | tojson }}\n{% endfor %}\n{% endif %}{{ m.content }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    ),
    # Llama 3.1's shape: BOS, then a system block the template always writes (a knowledge date, a fixed date) holding
    # the system text; turns end with <|eot_id|>
    "llama31": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|end_of_text|>",
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "<|start_header_id|>system<|end_header_id|>\n\nKnowledge cutoff: 2023\nDate: 26 Jul 2024\n\n{{ sys }}<|eot_id|>"
        "{% for m in msgs %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    ),
    # Llama 3.2's shape: the same with today's date
    "llama32": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|end_of_text|>",
        "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
        "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
        "<|start_header_id|>system<|end_header_id|>\n\nDate: {{ strftime_now('%d %b %Y') }}\n\n{{ sys }}<|eot_id|>"
        "{% for m in msgs %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    ),
    # DeepSeek-V3's shape: BOS, the system text bare, then role markers that are ordinary (not special) tokens
    "bare_system": (
        ["<|bos|>", "<|eos|>"], "<|bos|>", "<|eos|>",
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}"
        "{% elif m.role == 'user' %}<User>{{ m.content }}{% else %}<Assistant>{{ m.content }}<|eos|>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<Assistant>{% endif %}",
    ),
    # turns end with <|end|> (not the eos <|endoftext|>)
    "end_token": (
        ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|endoftext|>", "<|endoftext|>",
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    ),
}  # fmt: skip

REASONING = "<think>The user asks about France. Its capital is Paris, on the Seine.</think>"
ANSWER = "The capital of France is Paris."


def conversation(system: bool = True) -> list[ChatMessage]:
    msgs = [
        ChatMessage.user("What is the capital of France?"),
        ChatMessage.assistant(REASONING + "\n\n" + ANSWER),
        ChatMessage.user("And the capital of Italy?"),
    ]
    return [ChatMessage.system("You are a terse assistant."), *msgs] if system else msgs


def get_weather(city: str):
    """Get the weather in a city."""
    return f"Sunny in {city}"


FUNCTIONS = [AIFunction(get_weather, name="get_weather", desc="Get the weather in a city.")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, chat_model_builder):
    root = tmp_path_factory.mktemp("templates")
    return {name: chat_model_builder(root / name, sp, tpl, bos, eos) for name, (sp, bos, eos, tpl) in
            TEMPLATES.items()}  # fmt: skip


@pytest.fixture(scope="module")
def engines(folders):
    return {name: kanibook.load(folder) for name, folder in folders.items()}


CASES = {
    # name: (with a system message, functions, expected rendered text of each message (None: not in the prompt))
    "merged_first": (True, None),
    "system_in_last_user": (True, None),
    "drops_system": (True, None),
    "strips_reasoning": (True, None),
    "default_system_date": (False, None),
    "tools_in_user": (True, FUNCTIONS),
    "end_token": (True, None),
    "llama31": (True, None),
    "llama32": (True, None),
    "bare_system": (True, None),
}


def rendered_text(name: str, k: int, message) -> str | None:
    """What each template is known to render of message k (the tests' own knowledge of their templates)."""
    if name == "drops_system" and message.role.value == "system":
        return None
    if name in ("strips_reasoning",) and message.role.value == "assistant":
        return ANSWER
    return message.text


def char_spans(view):
    out, pos = [], 0
    for t in view.tokens:
        out.append((pos, pos + len(t.text)))
        pos += len(t.text)
    return out


def check_message_texts(name, view):
    """Every token inside a message's rendered text belongs to that message and is not marked as scaffolding."""
    spans = char_spans(view)
    for k, m in enumerate(view.messages):
        want = rendered_text(name, k, m)
        if want is None:
            assert view.segments_of(k) == [] or all(s.count == 0 for s in view.segments_of(k))
            continue
        at = view.text.find(want)
        assert at >= 0, (name, k)
        inside = [i for i, (s, e) in enumerate(spans) if s >= at and e <= at + len(want) and e > s]
        assert inside, (name, k)
        for i in inside:
            t = view.tokens[i]
            assert view.segments[t.segment].message_index == k, (name, k, t)
            assert not t.is_template, (name, k, t)


def check_turn_ends(view, marker: str):
    """An end-of-turn marker belongs to the turn it ends: the message whose text comes just before it."""
    seen = 0
    for t in view.tokens:
        if t.text != marker:
            continue
        seen += 1
        before = [u for u in view.tokens[: t.position] if not u.is_template]
        owner = view.segments[before[-1].segment].message_index
        assert view.segments[t.segment].message_index == owner, (marker, t.position)
    assert seen


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_ids_text_and_notes_per_template(name, engines, folders):
    engine = engines[name]
    system, functions = CASES[name]
    msgs = conversation(system)
    view = kanibook.show_prompt(engine, msgs, functions)
    ids = engine.build_prompt(msgs, functions)["input_ids"][0].tolist()
    assert view.token_ids == ids
    tok = engine.tokenizer
    dicts = [{"role": m.role.value, "content": m.text} for m in msgs]
    tools = [{"type": "function", "function": f.json_schema} for f in functions] if functions else None
    text = tok.apply_chat_template(dicts, tools=tools, add_generation_prompt=True, tokenize=False)
    if functions is None:
        assert text == view.text
        assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert sum(s.count for s in view.segments) == view.total
    check_message_texts(name, view)
    only = kanibook.show_prompt(folders[name], msgs, functions)  # the tokenizer alone gives the same
    assert only.token_ids == ids
    assert [(t.segment, t.is_template) for t in only.tokens] == [(t.segment, t.is_template) for t in view.tokens]
    assert only.template_notes == view.template_notes
    kinds = {(n.kind, n.message_index) for n in view.template_notes}
    html, plain = view._repr_mimebundle_()["text/html"], view._repr_mimebundle_()["text/plain"]
    for note in view.template_notes:
        assert note.text in plain
    if view.template_notes:
        assert "what the template did" in html and html.index("kb-did") < html.index('class="kb-seg ')
    EXPECTED[name](view, kinds)


def _merged_first(view, kinds):
    assert kinds == {("merged", 0)}
    assert view.template_notes[0].text == "#1 system: merged into #2 user's turn"
    check_turn_ends(view, "<end_of_turn>")
    header = next(t for t in view.tokens if t.text == "<start_of_turn>")
    assert view.segments[header.segment].message_index == 1  # the turn is the user's; the system text inside it
    assert [s.message_index for s in view.segments[:4]] == [None, 1, 0, 1]  # the BOS before the first message


def _system_in_last_user(view, kinds):
    assert kinds == {("moved", 0)}  # (merged into that turn: said in the same line)
    moved = next(n for n in view.template_notes if n.kind == "moved")
    assert moved.text == "#1 system: moved into #4 user's turn, after #3 assistant's text"
    order = [s.message_index for s in view.segments if s.count and s.message_index is not None]
    assert order.index(0) > order.index(2)  # the system text comes after the assistant's, where it is
    system_seg = next(s for s in view.segments if s.message_index == 0 and s.count)
    before = view.tokens[system_seg.start - 1]
    assert before.text == "[INST]" and view.segments[before.segment].message_index == 3  # the user turn's header


def _drops_system(view, kinds):
    assert kinds == {("dropped", 0)}
    assert view.template_notes[0].text == "#1 system: not in the prompt: this template drops system messages"
    assert all(s.count == 0 for s in view.segments if s.message_index == 0)
    check_turn_ends(view, "<|im_end|>")


def _strips_reasoning(view, kinds):
    assert kinds == {("rewritten", 2)}
    note = view.template_notes[0]
    missing = len(REASONING + "\n\n" + ANSWER) - len(ANSWER)
    assert note.tokens == missing
    assert note.text == f"#3 assistant: rewritten: {missing} of its characters are not in the prompt (its reasoning was removed)"
    seg = next(s for s in view.segments if s.message_index == 2)
    assert "<think>" not in "".join(t.text for t in view.tokens[seg.start : seg.end])
    user_seg = next(s for s in view.segments if s.message_index == 3)
    assert view.tokens[user_seg.start].text == "<|User|>"  # the header that starts a turn is not an end of turn


def _default_system_date(view, kinds):
    assert ("added", None) in kinds and ("date", None) in kinds
    added = next(n for n in view.template_notes if n.kind == "added")
    lead = [t for t in view.tokens if view.segments[t.segment].label.startswith("template (before")]
    assert added.tokens == len(lead) > 5
    assert "a default system prompt" in added.text
    assert "You are a helpful assistant" in "".join(t.text for t in lead)
    date = next(n for n in view.template_notes if n.kind == "date")
    today = {datetime.date.today().strftime("%d %B %Y"), datetime.datetime.now(datetime.UTC).strftime("%d %B %Y")}
    assert any(d in date.text for d in today) and "before the first message" in date.text


def _tools_in_user(view, kinds):
    assert kinds == {("tools", 3)}
    note = view.template_notes[0]
    assert re.fullmatch(r"the template added \d+ tokens of tool definitions, in #4 user's turn", note.text)
    at = view.text.find('"get_weather"')
    tok = next(t for t in view.tokens if sum(len(u.text) for u in view.tokens[: t.position + 1]) > at)
    assert view.segments[tok.segment].message_index == 3 and tok.is_template
    check_turn_ends(view, "<|eot_id|>")


def _end_token(view, kinds):
    assert kinds == set()
    check_turn_ends(view, "<|end|>")
    assert view.segments[-1].label == "generation prompt"
    assert "".join(t.text for t in view.tokens[view.segments[-1].start :]) == "<|assistant|>\n"


def _llama31(view, kinds):
    assert kinds == set()  # the system text is in the template's own block: nothing moved (the date is fixed text)
    check_turn_ends(view, "<|eot_id|>")
    system = view.segments_of(0)[0]
    assert view.tokens[system.start].text == "<|start_header_id|>"  # the block's header is the system turn's


def _llama32(view, kinds):
    assert kinds == {("date", 0)}  # today's date, in the system block
    check_turn_ends(view, "<|eot_id|>")


def _bare_system(view, kinds):
    assert kinds == {("bare", 0)}
    assert view.template_notes[0].text == "#1 system: rendered without a role marker, before #2 user's turn"
    system = next(s for s in view.segments if s.message_index == 0 and s.count)
    assert all(not t.is_template for t in view.tokens[system.start : system.end])  # its own text, nothing else


EXPECTED = {
    "merged_first": _merged_first,
    "system_in_last_user": _system_in_last_user,
    "drops_system": _drops_system,
    "strips_reasoning": _strips_reasoning,
    "default_system_date": _default_system_date,
    "tools_in_user": _tools_in_user,
    "end_token": _end_token,
    "llama31": _llama31,
    "llama32": _llama32,
    "bare_system": _bare_system,
}


@pytest.mark.parametrize("name", [n for n, (_, bos, _, tpl) in TEMPLATES.items() if "bos_token" in tpl])
@pytest.mark.parametrize("system", [True, False])
def test_the_bos_is_template_text_before_the_first_message(name, system, folders):
    view = kanibook.show_prompt(folders[name], conversation(system))
    first = view.tokens[0]
    assert first.text == TEMPLATES[name][1] and first.is_template
    segment = view.segments[first.segment]
    assert segment.message_index is None and segment.label == "template (before the messages)"
    plain = view._repr_mimebundle_()["text/plain"]
    assert "template (before the messages)" in plain  # the whole label, not cut, in the text form


def test_compare_two_templates_token_by_token(folders):
    msgs = conversation()
    cmp = kanibook.compare_prompts(folders["merged_first"], folders["drops_system"], msgs)
    assert not cmp.same
    assert cmp.a.token_ids != cmp.b.token_ids
    plain = cmp._repr_mimebundle_()["text/plain"]
    assert "merged into #2 user's turn" in plain and "not in the prompt" in plain
    assert "(tokenizer only)" in cmp.labels[0]


def test_refusal_names_the_message_and_fix_is_only_on_request(folders, chat_model_builder):
    alternate = (
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    folder = folders["drops_system"].parent / "alternate"
    chat_model_builder(folder, CHATML, alternate, "<|endoftext|>", "<|endoftext|>")
    msgs = conversation()
    with pytest.raises(KanibookError) as info:
        kanibook.show_prompt(folder, msgs)
    line = str(info.value)
    assert "\n" not in line
    assert "refuses message #1 (system): Conversation roles must alternate user/assistant/user/assistant/..." in line
    assert "fix=True" in line
    view = kanibook.show_prompt(folder, msgs, fix=True)
    assert [m.role.value for m in view.messages] == ["user", "assistant", "user"]
    assert view.messages[0].text == "You are a terse assistant.\n\nWhat is the capital of France?"
    assert [n.kind for n in view.template_notes] == ["fixed"]
    assert "system message merged into the next user message" in view.template_notes[0].text
    assert "system message merged" in view._repr_mimebundle_()["text/plain"]
    two_users = [ChatMessage.user("a"), ChatMessage.assistant("b"), ChatMessage.user("c"), ChatMessage.user("d")]
    with pytest.raises(KanibookError, match=r"refuses message #4 \(user\)"):
        kanibook.show_prompt(folder, two_users)
    fixed = kanibook.show_prompt(folder, two_users, fix=True)
    assert fixed.messages[-1].text == "c\n\nd"


def test_hostile_text_in_notes_is_inert(folders, hostile, html_audit):
    msgs = [ChatMessage.system(hostile), ChatMessage.user(hostile), ChatMessage.assistant(f"<think>{hostile}</think>ok"),
            ChatMessage.user("fine")]  # fmt: skip
    view = kanibook.show_prompt(folders["strips_reasoning"], msgs)
    assert any(n.kind == "rewritten" for n in view.template_notes)
    assert html_audit(view._repr_mimebundle_()["text/html"], tags=TAGS, css=CSS) == []
    view = kanibook.show_prompt(folders["drops_system"], msgs)
    assert html_audit(view._repr_mimebundle_()["text/html"], tags=TAGS, css=CSS) == []


def test_a_message_rendered_twice_is_said_and_owned_both_times(tmp_path, chat_model_builder):
    repeats = (  # the system text at the start and again before the last user message (written for this test)
        "{% set sys = messages[0].content if messages[0].role == 'system' else '' %}"
        "{% for m in messages %}{% if m.role == 'user' and loop.last and sys %}<|im_start|>system\n{{ sys }}"
        "<|im_end|>\n{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    folder = chat_model_builder(tmp_path / "repeats", CHATML, repeats, "<|endoftext|>", "<|endoftext|>")
    msgs = conversation()
    view = kanibook.show_prompt(folder, msgs)
    assert {(n.kind, n.message_index) for n in view.template_notes} == {("repeated", 0)}
    assert view.template_notes[0].text == "#1 system: rendered 2 times"
    system_segments = [s for s in view.segments_of(0) if s.count]
    assert len(system_segments) == 2
    for seg in system_segments:
        own = "".join(t.text for t in view.tokens[seg.start : seg.end] if not t.is_template)
        assert own == "You are a terse assistant."
    check_turn_ends(view, "<|im_end|>")
    assert sum(s.count for s in view.segments) == view.total


def test_no_system_role_refusal_and_fix(tmp_path, chat_model_builder):
    no_system = (  # written for this test, after the behaviour of templates without a system role
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    folder = chat_model_builder(tmp_path / "no-system", CHATML, no_system, "<|endoftext|>", "<|endoftext|>")
    msgs = [ChatMessage.user("Hi"), ChatMessage.assistant("Hello"), ChatMessage.system("Be brief."),
            ChatMessage.user("Why?")]  # fmt: skip
    with pytest.raises(KanibookError, match=r"refuses message #3 \(system\): System role not supported\. "):
        kanibook.show_prompt(folder, msgs)
    view = kanibook.show_prompt(folder, msgs, fix=True)
    assert [m.role.value for m in view.messages] == ["user", "assistant", "user"]
    assert view.messages[-1].text == "Be brief.\n\nWhy?"
    own = "".join(t.text for s in view.segments_of(2) for t in view.tokens[s.start : s.end] if not t.is_template)
    assert own == "Be brief.\n\nWhy?"


def test_a_bos_that_is_the_turn_marker_stays_with_the_first_turn(tmp_path, chat_model_builder):
    # (the embedded SmolLM2's tokenizer names <|im_start|> as its BOS: there it is every turn's header)
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    folder = chat_model_builder(tmp_path / "chatml-bos", CHATML, chatml, "<|im_start|>", "<|endoftext|>")
    view = kanibook.show_prompt(folder, conversation())
    first = view.segments[view.tokens[0].segment]
    assert view.tokens[0].text == "<|im_start|>" and first.message_index == 0
