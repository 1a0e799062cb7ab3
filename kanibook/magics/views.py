"""What ``%%chat`` and ``%kani history`` show: the reply streaming into the cell's output (or a terminal), its
figures, the conversation. Display objects only; the magics themselves are in :mod:`kanibook.magics.commands`."""

from __future__ import annotations

# ---- what %%chat shows ----


def _stream_view(shell):
    from IPython.core.displaypub import DisplayPublisher

    if type(shell.display_pub) is DisplayPublisher:  # a terminal: no display updates, print as it comes
        return _TerminalStream()
    return _DisplayStream()


class _DisplayStream:
    """Streams the reply into one output area (a display handle), then renders it as Markdown."""

    def __init__(self):
        self._handle = None

    def show(self, obj) -> None:
        from IPython.display import display

        display(obj)

    def start(self) -> None:
        from IPython.display import display

        self._handle = display(ReplyView(""), display_id=True)

    def update(self, text: str) -> None:
        self._handle.update(ReplyView(text))

    def finish(self, result, probs=None) -> None:
        """The finished reply replaces what streamed; with ``probs`` (``%%chat --probs``) the coloured reply takes
        its place (shown once, not the Markdown reply and then the coloured one)."""
        reply = ReplyView(result.text, done=True, stopped=result.stopped, stats=result.stats, error=result.error)
        self._handle.update(reply if probs is None else _WithFooter(probs, reply.footer()))


class _WithFooter:
    """A view (the probabilities of a reply) followed by the turn's figures line."""

    def __init__(self, view, footer: str):
        self.view, self.footer = view, footer

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..render import safe

        bundle = self.view._repr_mimebundle_()
        bundle = bundle[0] if isinstance(bundle, tuple) else dict(bundle)
        if self.footer:
            bundle["text/plain"] = f"{bundle.get('text/plain', '')}\n\n[{self.footer}]"
            bundle["text/html"] = (f"{bundle.get('text/html', '')}<div class=\"kb-figures\" style=\""
                                   f"{safe.css(opacity='0.7', font_size='smaller')}\">{safe.text(self.footer)}</div>")  # fmt: skip
        return bundle


class _TerminalStream:
    """A plain IPython shell: print the new text as it arrives, then a line of figures."""

    def __init__(self):
        self._shown = ""

    def show(self, obj) -> None:
        print(obj._repr_mimebundle_()["text/plain"], flush=True)

    def start(self) -> None:
        pass

    def update(self, text: str) -> None:
        new = text[len(self._shown) :] if text.startswith(self._shown) else "\n" + text
        self._shown = text
        print(new, end="", flush=True)

    def finish(self, result, probs=None) -> None:
        if not result.error:
            self.update(result.text)
        footer = ReplyView(result.text, done=True, stopped=result.stopped, stats=result.stats).footer()
        print("\n" + footer if footer else "", flush=True)
        if probs is not None:  # the text streamed already: the probabilities follow it
            self.show(probs)



class ReplyView:
    """One reply as %%chat shows it: escaped text while streaming, sanitized Markdown when done, plus figures.

    :param text: The reply's text (so far).
    :param done: Whether the reply is complete (rendered as Markdown).
    :param stopped: Whether it was stopped before the model finished.
    :param stats: The turn's :class:`~kanibook.TurnStats`, if the engine gives them.
    :param error: A one-line error, if the turn failed.
    """

    def __init__(self, text: str, *, done: bool = False, stopped: bool = False, stats=None, error: str | None = None):
        self.text, self.done, self.stopped, self.stats, self.error = text, done, stopped, stats, error

    def footer(self) -> str:
        parts = []
        if self.stopped:
            parts.append("⏹ stopped")
        if self.error:
            parts.append(f"⚠ {self.error}")
        if self.stats is not None:
            parts.append(format_figures(self.stats))
        return " · ".join(p for p in parts if p)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..render import safe

        footer = self.footer()
        plain = self.text + (f"\n\n[{footer}]" if footer and self.done else "")
        body = safe.markdown(self.text) if self.done else f'<div class="kb-streaming">{safe.text(self.text)}▌</div>'
        classes = (
            "kb-chat-output" + (" kb-msg-stopped" if self.stopped else "") + (" kb-msg-error" if self.error else "")
        )
        html = f'<div class="{classes}">{body}'
        if footer and self.done:
            html += f'<div class="kb-figures" style="opacity:0.7;font-size:smaller">{safe.text(footer)}</div>'
        html += "</div>"
        return {"text/plain": plain, "text/html": html}


def format_figures(stats) -> str:
    """One line of a turn's figures: time to first token, tokens/s, tokens, peak memory."""
    parts = []
    if getattr(stats, "time_to_first_token_s", None) is not None:
        parts.append(f"first token {stats.time_to_first_token_s:.2f} s")
    if getattr(stats, "tokens_per_second", None):
        parts.append(f"{stats.tokens_per_second:.1f} tokens/s")
    if getattr(stats, "completion_tokens", None) is not None:
        parts.append(f"{stats.completion_tokens} tokens")
    if getattr(stats, "peak_memory_bytes", 0):
        kind = "GPU" if getattr(stats, "memory_kind", "") == "cuda" else "process"
        parts.append(f"peak memory {stats.peak_memory_bytes / 2**20:,.0f} MiB ({kind})")
    return " · ".join(parts)


class HistoryView:
    """The conversation as a list of messages (role and text), escaped for HTML.

    :param messages: kani ``ChatMessage`` objects.
    """

    def __init__(self, messages: list):
        self.messages = list(messages)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ..render import safe

        if not self.messages:
            return {"text/plain": "(no messages yet)", "text/html": "<em>(no messages yet)</em>"}
        plain = "\n\n".join(f"{m.role.value}: {m.text or ''}" for m in self.messages)
        rows = "".join(
            f'<div class="kb-msg kb-msg-{safe.attr(m.role.value)}"><strong>{safe.text(m.role.value)}</strong>'
            f'<div style="white-space:pre-wrap">{safe.text(m.text or "")}</div></div>'
            for m in self.messages
        )
        return {"text/plain": plain, "text/html": f'<div class="kb-history">{rows}</div>'}


# ---- what %%chat --why shows ----


def show_why(kani) -> None:
    """Display what the last reply rests on (:func:`kanibook.explain_reply`); a reply it cannot explain: one line."""
    from IPython.display import display

    from ..exceptions import KanibookError
    from ..explain import explain_reply

    try:
        display(explain_reply(kani))
    except KanibookError as e:  # an engine that cannot score, media, a conversation too long: one line
        print(f"why: {e}")
