"""The chat panel's HTML pieces: hostile model / user / function text can never become markup."""

from __future__ import annotations

import base64
import html
import json

import pytest
from _html import ParsedHTML, parse_html

from kanibook import TurnStats
from kanibook.render import chat as render

HOSTILE = [
    "<script>alert(1)</script>",
    "</script><script>alert(1)</script>",
    "\"'><img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "[click](javascript:alert(1))",
    "<a href='javascript:alert(1)'>x</a>",
    "</details></pre><svg onload=alert(1)>",
    "abc\u202eevil\u202c and \x00 NUL \x1b[31m",
]


_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data"}


def assert_inert(source: str) -> ParsedHTML:
    """No script element, no event handler, no javascript: URL, no raw control or direction characters."""
    parsed = parse_html(source)
    assert "<script" not in source.lower()
    for tag, attrs in parsed.tags:
        assert tag not in {"script", "img", "svg", "iframe", "object", "embed"}, (tag, source)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, source)
            if name in _URL_ATTRIBUTES:
                assert not (value or "").strip().lower().startswith(("javascript:", "vbscript:")), (tag, name, source)
    assert not any(ch in source for ch in "\x00\x1b\u202e\u202c")
    return parsed


def _conversation(text: str) -> list:
    from kani import ChatMessage, ToolCall

    call = ToolCall.from_function("f", q=text)
    return [
        ChatMessage.system(text),
        ChatMessage.user(text, name=text),
        ChatMessage.assistant(text, tool_calls=[call]),
        ChatMessage.function(text, text, call.id),
    ]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_text_renderer_keeps_hostile_text_inert(hostile):
    pieces = [
        render.streaming_body(hostile),
        render.final_body(hostile),
        render.literal_body(hostile),
        render.role_label("user", hostile),
        render.tool_call_card(hostile, hostile, hostile),
        render.tool_call_card("f", json.dumps({"q": hostile})),
        render.tool_result_card(hostile, hostile, is_error=True),
        render.error_line(hostile),
        render.status_line(hostile),
        render.download_link(hostile, hostile.encode(), saved_to=hostile),
        render.snapshot(_conversation(hostile), title=hostile),
    ]
    for piece in pieces:
        assert_inert(piece)


def test_streaming_and_literal_text_is_shown_as_text():
    hostile = "\"'><img src=x onerror=alert(1)> <script>alert(1)</script>"
    parsed = parse_html(render.streaming_body(hostile))
    assert parsed.tags == [] and "".join(parsed.text) == hostile  # visible to the reader exactly as written
    literal = parse_html(render.literal_body("line 1\n<b>line 2</b>"))
    assert [t for t, _ in literal.tags] == ["div"] and "".join(literal.text) == "line 1\n<b>line 2</b>"
    # the partial text of a streaming reply only grows as tokens are added
    text = "a <b"
    assert render.streaming_body(text + "r>").startswith(render.streaming_body(text))


def test_direction_override_and_control_chars_become_visible_markers():
    out = render.streaming_body("abc\u202eevil\x00")
    assert "\u202e" not in out and "\x00" not in out
    assert "U+202E" in out and "\u2400" in out


def test_final_body_renders_markdown_but_no_links_to_javascript():
    out = render.final_body("**bold** and `code`\n\n- item\n\n[ok](https://example.org) [bad](javascript:alert(1))")
    parsed = assert_inert(out)
    tags = [t for t, _ in parsed.tags]
    assert {"strong", "code", "ul", "li"} <= set(tags)
    hrefs = [a.get("href") for t, a in parsed.tags if t == "a"]
    assert hrefs == ["https://example.org"]


def test_tool_cards_are_collapsible_and_cannot_be_closed_early():
    call = render.tool_call_card("get_weather", '{"city": "Paris", "note": "</details><script>x</script>"}', "id-1")
    parsed = assert_inert(call)
    assert [t for t, _ in parsed.tags][:2] == ["details", "summary"]
    assert call.count("</details>") == 1 and call.endswith("</details>")
    assert '"city": "Paris"' in html.unescape(call)  # pretty-printed JSON
    assert 'title="id-1"' in call
    result = render.tool_result_card("get_weather", "</pre></details>sunny", is_error=False, open=True)
    assert result.count("</details>") == 1 and '<details class="kb-fn-card kb-fn-result" open>' in result
    assert "kb-fn-error" in render.tool_result_card(None, "boom", is_error=True)
    assert "not json" in render.tool_call_card("f", "not json")


def test_figures_line_from_turn_stats():
    stats = TurnStats(
        prompt_tokens=30,
        completion_tokens=12,
        time_to_first_token_s=0.25,
        tokens_per_second=15.44,
        total_s=1.0,
        peak_memory_bytes=612_000_000,
        memory_kind="process",
        stopped=True,
        tokens_after_stop=1,
        stop_latency_s=0.05,
    )
    line = render.figures(stats)
    assert (
        line == "first token 0.25 s · 15.4 tok/s · 12 tokens · peak 612 MB (process) · stopped, 1 token(s) after Stop"
    )
    assert render.figures(None) == ""

    class Partial:  # an engine's own stats object with fewer fields
        tokens_per_second = 3.0

    assert render.figures(Partial()) == "3.0 tok/s"


def test_context_meter_levels():
    assert "context: ?" in render.context_meter(None, 8192)
    assert "12 tokens" in render.context_meter(12, None)
    low, warn, full = render.context_meter(100, 1000), render.context_meter(800, 1000), render.context_meter(999, 1000)
    assert "width: 10.0%" in low and "kb-meter-warn" not in low
    assert "kb-meter-warn" in warn and "kb-meter-full" in full and "999 / 1000 tokens" in full
    assert "width: 100.0%" in render.context_meter(5000, 1000)


def test_error_line_is_one_line():
    out = render.error_line("first line <b>\nsecond line")
    assert "second" not in out and "\n" not in out and "&lt;b&gt;" in out
    assert "unknown error" in render.error_line("")


def test_download_link_carries_the_file():
    data = "ünïcode <script>".encode()
    link = render.download_link('a"b.json', data, "application/json")
    parsed = assert_inert(link)
    (tag, attrs) = parsed.tags[0]
    assert tag == "a" and attrs["download"] == 'a"b.json'
    assert base64.b64decode(attrs["href"].split(",", 1)[1]) == data
    assert render.download_link("x", b"", "text/html").startswith(
        '<a class="kb-download" download="x" href="data:text/plain'
    )


def test_format_bytes():
    assert [render.format_bytes(n) for n in (None, 512, 1_500, 612_000_000, 1_400_000_000)] == [
        "?", "512 B", "1.5 kB", "612 MB", "1.4 GB",
    ]  # fmt: skip


def test_style_block_has_the_css_contract_selectors():
    style = render.style_block()
    for css in ("kb-chat-panel", "kb-messages", "kb-msg-user", "kb-msg-assistant", "kb-msg-system",
                "kb-msg-function", "kb-msg-error", "kb-msg-streaming", "kb-msg-stopped", "kb-figures", "kb-status"):  # fmt: skip
        assert f".{css}" in style


def test_snapshot_shows_every_message():
    out = render.snapshot(_conversation("hi **there**"), title="T")
    parsed = assert_inert(out)
    assert out.count('class="kb-snapshot-msg"') == 4 and "<strong>there</strong>" in out  # the reply as Markdown
    assert "kb-fn-call" in out and "kb-fn-result" in out
    assert [t for t, _ in parsed.tags].count("details") == 2
    assert "no messages yet" in render.snapshot([])
