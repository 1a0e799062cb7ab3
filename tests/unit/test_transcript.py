"""Transcript export: JSON that kani loads back unchanged, and Markdown that stays inert wherever it is rendered."""

from __future__ import annotations

import json

import pytest
from _html import parse_html
from kani import ChatMessage, Kani, ToolCall
from kani.engines.base import BaseEngine, Completion
from markdown_it import MarkdownIt

from kanibook.conversation import transcript
from kanibook.exceptions import KanibookError

HOSTILE = "<script>alert(1)</script> \"'><img src=x onerror=alert(1)> [x](javascript:alert(1)) \u202e\x00"


class EchoEngine(BaseEngine):
    """The smallest real kani engine: it repeats the last message (transcripts need no model)."""

    max_context_size = 1024

    def prompt_len(self, messages, functions=None, **kwargs) -> int:
        return len(messages)

    async def predict(self, messages, functions=None, **hyperparams):
        return Completion(ChatMessage.assistant(messages[-1].text))


def conversation() -> Kani:
    call = ToolCall.from_function("lookup", query=HOSTILE)
    stopped = ChatMessage.assistant("A reply cut **short**")
    transcript.mark_stopped(stopped)
    history = [
        ChatMessage.user(HOSTILE, name="ann"),
        ChatMessage.assistant(None, tool_calls=[call]),
        ChatMessage.function("lookup", f"found ``` {HOSTILE}", call.id, is_tool_call_error=False),
        ChatMessage.assistant(f"**Bold** reply with `code` and {HOSTILE}"),
        ChatMessage.user("second\nline"),
        stopped,
    ]
    return Kani(EchoEngine(), system_prompt="Be <b>nice</b>.", chat_history=history)


def test_json_round_trip_loads_back_into_kani(tmp_path):
    ai = conversation()
    path = transcript.save_json(ai, tmp_path / "chat.json")
    restored = Kani(EchoEngine())
    restored.load(path)  # kani's own loader
    assert restored.chat_history == ai.chat_history
    assert restored.always_included_messages == ai.always_included_messages
    assert [m.model_dump() for m in restored.chat_history] == [m.model_dump() for m in ai.chat_history]
    assert transcript.is_stopped(restored.chat_history[-1]) and not transcript.is_stopped(restored.chat_history[3])
    assert restored.chat_history[1].tool_calls[0].function.kwargs == {"query": HOSTILE}
    # and the other way: what kani saves, kanibook reads
    ai.save(tmp_path / "kani.json", save_format="json")
    saved = transcript.load_json(tmp_path / "kani.json")
    assert saved.chat_history == ai.chat_history
    data = json.loads(transcript.to_json(ai))
    assert set(data) == {"version", "always_included_messages", "chat_history"}


def test_a_restored_conversation_continues(tmp_path, run_async):
    ai = conversation()
    path = transcript.save_json(ai, tmp_path / "chat.json")
    restored = Kani(EchoEngine())
    restored.load(path)
    reply = run_async(restored.chat_round_str("echo me"))
    assert reply == "echo me" and len(restored.chat_history) == len(ai.chat_history) + 2


def test_markdown_export_contains_the_messages_and_stays_inert():
    ai = conversation()
    md = transcript.to_markdown(ai, title="My <chat>")
    assert md.startswith("# My \\<chat\\>\n")
    assert "### System" in md and "### You · ann" in md and "### Assistant" in md and "### Function · lookup" in md
    assert "**Function call** lookup" in md and "*(stopped)*" in md
    assert "**Bold** reply with `code`" in md  # the reply's own Markdown is kept
    assert "\x00" not in md and "\u202e" not in md
    # rendered by a permissive renderer (raw HTML allowed, as many Markdown viewers do)
    rendered = MarkdownIt("commonmark", {"html": True}).render(md)
    parsed = parse_html(rendered)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags and "img" not in tags and "a" not in tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    text = "".join(parsed.text)
    assert "<script>alert(1)</script>" in text  # shown as text, not run
    assert "[x](javascript:alert(1))" in text
    assert "<p>second<br />\nline</p>" in rendered  # line breaks kept
    assert "<b>nice</b>" in text
    # the function call and its result are code blocks, fenced longer than any backticks inside
    assert '"query": ' in md and "````\nfound ``` " in md
    assert tags.count("pre") == 2


def test_markdown_of_messages_and_files(tmp_path):
    path = transcript.save_markdown(conversation(), tmp_path / "chat.md")
    assert path.read_text(encoding="utf-8") == transcript.to_markdown(conversation())
    only = transcript.to_markdown(messages=[ChatMessage.user("just *this*")])
    assert only == "# Chat transcript\n\n### You\n\njust \\*this\\*\n"
    with pytest.raises(KanibookError):
        transcript.to_markdown()


def test_message_text_does_not_coerce_parts():
    from kani import MessagePart

    class Picture(MessagePart):
        pass

    msg = ChatMessage.user(["look: ", Picture()])
    assert transcript.message_text(msg) == "look: [Picture]"


@pytest.mark.parametrize(
    "source",
    [
        "[x](javascript:alert(1))",
        "\\[x\\](javascript:alert(1))",  # pre-escaped brackets cannot be un-escaped by an added backslash
        "![i](javascript:alert(1)) <javascript:alert(1)> <img src=x onerror=alert(1)>",
        "[ref]\n\n[ref]: javascript:alert(1)",
        "<script>alert(1)</script>\n\n<div onclick=alert(1)>x</div>",
    ],
)
def test_markdown_helpers_leave_no_link_or_html_for_any_renderer(source):
    from kanibook.render import safe

    renderer = MarkdownIt("commonmark", {"html": True})
    for md in (safe.markdown_inert(source), safe.markdown_literal(source)):
        parsed = parse_html(renderer.render(md))
        tags = {t for t, _ in parsed.tags}
        assert not tags & {"a", "img", "script", "div"}, (md, tags)
    literal = parse_html(renderer.render(safe.markdown_literal(source)))
    assert "".join(literal.text).replace("\n", "") == source.replace("\n", "")  # exactly the text, shown as text
