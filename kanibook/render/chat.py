"""HTML pieces of the chat panel: message bodies, function-call cards, per-turn figures, the context meter.

Pure functions (data -> HTML string), no widgets, so they can be tested and reused (magics, static exports). Every
piece of text goes through :mod:`kanibook.render.safe`; nothing here escapes by hand.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import safe

__all__ = [
    "CSS",
    "context_meter",
    "download_link",
    "error_line",
    "figures",
    "final_body",
    "format_bytes",
    "literal_body",
    "pretty_arguments",
    "role_label",
    "snapshot",
    "status_line",
    "streaming_body",
    "style_block",
    "tool_call_card",
    "tool_result_card",
]

# the panel's look; selectors are the CSS-class contract (kb-*) the panel adds with add_class
CSS = """
.kb-chat-panel { border: 1px solid var(--jp-border-color2, #ccc); border-radius: 6px; padding: 6px; }
.kb-messages-scroll { max-height: 480px; overflow-y: auto !important; overflow-x: hidden;
                      display: flex !important; flex-direction: column-reverse !important; }
.kb-messages-scroll > *, .kb-messages > *, .kb-messages .widget-box > * { flex-shrink: 0 !important; }
.kb-messages { overflow: visible !important; }
.kb-controls { align-items: center; }
.kb-probs-toggle { align-items: center; }
.kb-probs-toggle .widget-label-basic { display: inline-flex; align-items: center; gap: 4px; }
.kb-probs-toggle .widget-label-basic input[type="checkbox"] { margin: 0; vertical-align: middle; }

.kb-msg { border-radius: 6px; padding: 2px 8px; margin: 3px 0; }
.kb-msg .widget-html-content { white-space: normal; line-height: 1.45; }
.kb-msg-user { background: rgba(33, 150, 243, 0.10); border-left: 3px solid #2196f3; }
.kb-msg-assistant { background: rgba(76, 175, 80, 0.08); border-left: 3px solid #4caf50; }
.kb-msg-system { background: rgba(158, 158, 158, 0.12); border-left: 3px solid #9e9e9e; font-style: italic; }
.kb-msg-function { background: rgba(255, 152, 0, 0.08); border-left: 3px solid #ff9800; }
.kb-msg-error { background: rgba(244, 67, 54, 0.10); border-left: 3px solid #f44336; color: #b71c1c; }
.kb-msg-streaming .kb-body .widget-html-content, .kb-literal { white-space: pre-wrap; }
.kb-msg-stopped .kb-role::after { content: " (stopped)"; color: #f44336; font-weight: normal; }
.kb-role { font-weight: bold; font-size: 0.85em; opacity: 0.75; }
.kb-figures { font-size: 0.8em; opacity: 0.7; }
.kb-status { font-size: 0.85em; opacity: 0.8; }
.kb-fn-card summary { cursor: pointer; }
.kb-fn-card pre { white-space: pre-wrap; margin: 2px 0; }
.kb-fn-error summary { color: #b71c1c; }
.kb-meter { display: inline-block; width: 120px; height: 8px; background: rgba(128,128,128,0.25);
            border-radius: 4px; vertical-align: middle; overflow: hidden; }
.kb-meter-fill { display: block; height: 100%; background: #4caf50; }
.kb-meter-warn .kb-meter-fill { background: #ff9800; }
.kb-meter-full .kb-meter-fill { background: #f44336; }
"""

_ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System", "function": "Function"}
_DOWNLOAD_TYPES = {"application/json", "text/markdown", "text/plain"}


def style_block() -> str:
    """The panel's stylesheet as a ``<style>`` element."""
    return f"<style>{CSS}</style>"


def role_label(role: str, name: str | None = None) -> str:
    """The small header line of a message: who said it (and the user's / function's name, if any).

    :param role: ``"user"``, ``"assistant"``, ``"system"`` or ``"function"``.
    :param name: The message's ``name`` (kani ``ChatMessage.name``), shown after the role.
    """
    label = _ROLE_NAMES.get(role, str(role).capitalize())
    suffix = f" · {safe.text(name)}" if name else ""
    return f'<span class="kb-role">{safe.text(label)}{suffix}</span>'


def streaming_body(text: str) -> str:
    """A reply while it streams: the partial text, escaped (no Markdown yet, so a half-written tag stays text)."""
    return safe.text(text)


def final_body(text: str | None) -> str:
    """A finished reply rendered as sanitized Markdown."""
    return safe.markdown(text or "")


def literal_body(text: str | None) -> str:
    """A user or system message: shown exactly as typed, line breaks kept."""
    return f'<div class="kb-literal">{safe.text(text or "")}</div>'


def pretty_arguments(arguments: str) -> str:
    """A tool call's JSON arguments indented for reading (as they came, when they are not JSON)."""
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(arguments)


def tool_call_card(name: str, arguments: str, call_id: str | None = None, *, open: bool = False) -> str:
    """A collapsible card for a function the model asked to call.

    :param name: The function's name.
    :param arguments: Its arguments as the model wrote them (JSON text; shown pretty-printed when valid).
    :param call_id: The tool call's id (shown as a tooltip).
    :param open: Whether the card starts expanded.
    """
    title = f' title="{safe.attr(call_id)}"' if call_id else ""
    return (
        f'<details class="kb-fn-card kb-fn-call"{" open" if open else ""}>'
        f"<summary{title}>call <code>{safe.text(name)}</code></summary>"
        f"<pre>{safe.text(pretty_arguments(arguments))}</pre></details>"
    )


def tool_result_card(name: str | None, content: str | None, *, is_error: bool = False, open: bool = False) -> str:
    """A collapsible card for what a function returned (or the error it raised).

    :param name: The function's name (None when kani reports an unknown function).
    :param content: The result as text.
    :param is_error: True when the call failed.
    :param open: Whether the card starts expanded.
    """
    kind = "error from" if is_error else "result of"
    css = "kb-fn-card kb-fn-result" + (" kb-fn-error" if is_error else "")
    return (
        f'<details class="{css}"{" open" if open else ""}>'
        f"<summary>{kind} <code>{safe.text(name or '?')}</code></summary>"
        f"<pre>{safe.text(content or '')}</pre></details>"
    )


def format_bytes(n: float | None) -> str:
    """Bytes as a short human figure (``"612 MB"``, ``"1.4 GB"``)."""
    if n is None:
        return "?"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def figures(stats: Any) -> str:
    """The per-turn figures under a reply, from any object with kanibook's ``TurnStats`` fields (missing ones skipped).

    :param stats: A :class:`kanibook.TurnStats` (or None: no figures).
    """
    if stats is None:
        return ""
    parts = []
    ttft = getattr(stats, "time_to_first_token_s", None)
    if ttft is not None:
        parts.append(f"first token {ttft:.2f} s")
    rate = getattr(stats, "tokens_per_second", None)
    if rate is not None:
        parts.append(f"{rate:.1f} tok/s")
    tokens = getattr(stats, "completion_tokens", None)
    if tokens is not None:
        parts.append(f"{tokens} tokens")
    peak = getattr(stats, "peak_memory_bytes", None)
    if peak:
        kind = getattr(stats, "memory_kind", None)
        parts.append(f"peak {format_bytes(peak)}" + (f" ({kind})" if kind else ""))
    if getattr(stats, "stopped", False):
        after = getattr(stats, "tokens_after_stop", None)
        parts.append("stopped" + (f", {after} token(s) after Stop" if after is not None else ""))
    return safe.text(" · ".join(parts))


def context_meter(used: int | None, total: int | None) -> str:
    """The context meter: prompt tokens of the next round against the model's context size.

    :param used: Tokens the next prompt takes (None: unknown).
    :param total: The model's context size (None: unknown).
    """
    if used is None:
        return safe.text("context: ?")
    if not total:
        return safe.text(f"context: {used} tokens")
    share = max(0.0, min(1.0, used / total))
    level = " kb-meter-full" if share >= 0.9 else " kb-meter-warn" if share >= 0.7 else ""
    title = safe.attr(f"{used} of {total} tokens of context used by the next prompt")
    return (
        f'<span title="{title}">context <span class="kb-meter{level}">'
        f'<span class="kb-meter-fill" style="width: {share * 100:.1f}%"></span></span> '
        f"{safe.text(f'{used} / {total} tokens')}</span>"
    )


def error_line(message: str) -> str:
    """An error shown in the message list: one line, the first line of the message."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    return f"<b>Error:</b> {safe.text(first)}"


def status_line(text: str) -> str:
    """The one-line status under the input box."""
    return safe.text(text)


def download_link(filename: str, data: bytes, mime: str = "text/plain", *, saved_to: str | None = None) -> str:
    """A link that downloads ``data`` as ``filename`` (a ``data:`` URL, so it works from any widget).

    :param filename: The suggested file name.
    :param data: The file's bytes.
    :param mime: ``application/json``, ``text/markdown`` or ``text/plain``.
    :param saved_to: Where the file was also saved, shown after the link.
    """
    if mime not in _DOWNLOAD_TYPES:
        mime = "text/plain"
    encoded = base64.b64encode(data).decode("ascii")
    note = f" (saved to <code>{safe.text(saved_to)}</code>)" if saved_to else ""
    return (
        f'<a class="kb-download" download="{safe.attr(filename)}" href="data:{mime};base64,{encoded}">'
        f"download {safe.text(filename)}</a>{note}"
    )


def snapshot(messages, title: str = "Chat") -> str:
    """A static HTML picture of a conversation (what a notebook viewer without widgets shows for the panel).

    :param messages: kani ``ChatMessage`` objects (text and function calls are shown; other parts by their type).
    :param title: The heading.
    """
    rows = []
    for m in messages:
        role = m.role.value
        text = "".join(p if isinstance(p, str) else f"[{type(p).__name__}]" for p in m.parts)
        body = final_body(text) if role == "assistant" else literal_body(text)
        if role == "function":
            body = tool_result_card(m.name, text, is_error=bool(m.is_tool_call_error))
        cards = "".join(tool_call_card(tc.function.name, tc.function.arguments, tc.id) for tc in m.tool_calls or ())
        rows.append(
            f'<div class="kb-snapshot-msg" style="border-left: 3px solid #999; padding: 0 8px; margin: 4px 0">'
            f"{role_label(role, m.name)}{body}{cards}</div>"
        )
    empty = "" if rows else f"<div>{safe.text('(no messages yet)')}</div>"
    return f'<div class="kb-chat-snapshot"><b>{safe.text(title)}</b>{"".join(rows)}{empty}</div>'
