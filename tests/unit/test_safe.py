"""kanibook.render.safe: the one place text becomes HTML."""

from __future__ import annotations

import json

from _html import parse_html

from kanibook.render import safe


def test_text_and_attr_escape_everything(hostile):
    for fn in (safe.text, safe.attr, safe.visible):
        out = fn(hostile)
        assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
        assert "\x00" not in out and "\u202e" not in out and "\x1b" not in out


def test_markdown_keeps_formatting_but_no_live_markup(hostile):
    out = safe.markdown(hostile)
    tags = parse_html(out).tags
    assert {tag for tag, _ in tags} <= {"p", "a", "code", "pre", "em", "strong", "br"}, tags
    for tag, attrs in tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        if "href" in attrs:
            assert attrs["href"].startswith(("http://", "https://", "mailto:")), attrs
    assert "\u202e" not in out and "\x00" not in out


def test_markdown_renders_what_a_reply_uses():
    out = safe.markdown("# Title\n\n**bold** and `code`\n\n- one\n- two\n\n[site](https://example.com)")
    assert "<h1>Title</h1>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert "<li>one</li>" in out
    assert 'href="https://example.com"' in out and 'rel="noopener noreferrer nofollow"' in out


def test_json_for_script_cannot_end_the_script(hostile):
    out = safe.json_for_script({"s": hostile, "t": "\u2028"})
    assert "</" not in out and "<!--" not in out and "<" not in out and "\u2028" not in out
    assert json.loads(out) == {"s": hostile, "t": "\u2028"}


def test_controls_become_visible_markers():
    assert safe.clean_chars("a\x00b") == "a\u2400b"
    assert safe.clean_chars("x\u202ey") == "x\u27e8U+202E\u27e9y"
    assert safe.clean_chars("tab\tnew\nline") == "tab\tnew\nline"
    assert safe.visible(" a\n") == "\u00b7a\u21b5\n"
