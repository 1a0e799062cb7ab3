"""What a browser would build from a piece of HTML: its elements with their attributes, and its text.

A plain helper (not a fixture) shared by the tests that check rendered HTML is inert.
"""

from __future__ import annotations

from html.parser import HTMLParser


class ParsedHTML(HTMLParser):
    """``.tags``: (tag, attributes) for every element, in order; ``.text``: the text pieces (entities decoded)."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_html(source: str) -> ParsedHTML:
    return ParsedHTML(source)
