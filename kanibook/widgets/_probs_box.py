"""Under a reply in the chat panel: its tokens coloured by probability, and "what if" controls to branch from one.

The branch controls are ordinary ipywidgets (reliable in every front end and driven from Python in tests): a
dropdown of the reply's tokens (the least confident first selected), a dropdown of that token's alternatives, and a
"what if" button that asks the panel to regenerate the reply from there with the alternative.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from ..render import probs as render

__all__ = ["ProbsBox"]


def _short(text: str, limit: int = 24) -> str:
    shown = render._quoted(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026\u201d"


class ProbsBox:
    """The probabilities view of one reply (``.widget``, class ``kb-probs-box``).

    :param probs: The reply's :class:`~kanibook.probs.record.ReplyProbs` (may still be growing).
    :param on_branch: Called with ``(token_index, alternative_index)`` when "what if" is clicked.
    """

    def __init__(self, probs, on_branch: Callable[[int, int], None] | None = None):
        self.probs = probs
        self._on_branch = on_branch
        self.html = widgets.HTML()
        self.html.add_class("kb-probs-view")
        self.token = widgets.Dropdown(description="token", style={"description_width": "48px"})
        self.alternative = widgets.Dropdown(description="instead", style={"description_width": "56px"})
        self.what_if = widgets.Button(description="What if", icon="code-branch", tooltip="regenerate from this token")
        self.what_if.layout.width = "auto"
        self.branch_controls = widgets.HBox([self.token, self.alternative, self.what_if])
        self.branch_controls.add_class("kb-branch")
        self.branch_controls.layout.display = "none"
        self.token.observe(self._fill_alternatives, "value")
        self.what_if.on_click(self._click)
        self.widget = widgets.VBox([self.html, self.branch_controls])
        self.widget.add_class("kb-probs-box")

    def show_partial(self) -> None:
        """Redraw the tokens received so far (called at the panel's throttled rate)."""
        self.html.value = render.reply_html(self.probs, title="probabilities", least=0, streaming=True)

    def finish(self, can_branch: bool) -> None:
        """The final view, and the branch controls when the reply can be branched."""
        self.html.value = render.reply_html(self.probs, title="probabilities", least=5)
        if not can_branch or not len(self.probs) or self.probs.prompt_ids is None:
            return
        self.token.options = [(f"#{t.index} {_short(t.text)} {render._pct(t.raw.prob)}", t.index) for t in self.probs]
        least = self.probs.least_confident(1)
        self.token.value = least[0].index
        self._fill_alternatives()
        self.branch_controls.layout.display = "flex"

    def _fill_alternatives(self, change=None) -> None:
        if self.token.value is None:
            return
        token = self.probs.tokens[self.token.value]
        options = [(f"{_short(a.text)} {render._pct(a.prob)}", k)
                   for k, a in enumerate(token.raw.top) if a.token_id != token.token_id]  # fmt: skip
        self.alternative.options = options
        self.alternative.value = options[0][1] if options else None
        self.what_if.disabled = not options

    def _click(self, _=None) -> None:
        if self._on_branch is not None and self.token.value is not None and self.alternative.value is not None:
            self._on_branch(int(self.token.value), int(self.alternative.value))

    def close_all(self) -> list:
        """The widgets to close."""
        return [self.html, self.token, self.alternative, self.what_if, self.branch_controls, self.widget]
