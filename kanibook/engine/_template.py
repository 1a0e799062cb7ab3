"""Chat templates as people bring them: ``chat_template=`` (a Jinja string or a ``.jinja`` file), and models without one.

Many models people quantize and study are base models: their tokenizer (or GGUF file) carries no chat template. Such
a model still scores text (``score_text``), shows a plain text's tokens and runs in the quantization lab; only chat
needs a template. :func:`read_chat_template` reads and checks a template *before* anything is loaded (a missing file,
a template that does not parse, or one that raises for a single user message is one line, nothing loaded half-way);
:func:`has_chat_template` says whether an engine can build a chat prompt; :class:`NoChatTemplateError` is the one-line
refusal of a chat attempt without one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import KanibookError

__all__ = ["ChatTemplateError", "NoChatTemplateError", "NO_TEMPLATE_NOTE", "has_chat_template", "plain_text",
           "read_chat_template", "set_chat_template"]  # fmt: skip

#: What the load line says about a model without a chat template.
NO_TEMPLATE_NOTE = (
    "no chat template: a base model? chat needs one, pass chat_template=... (or %kani load MODEL --chat-template "
    "FILE); score_text, the prompt view of plain text and the lab work without it"
)
_PROBE = [{"role": "user", "content": "Hello."}]


class ChatTemplateError(KanibookError, ValueError):
    """A chat template given to ``load`` is missing, does not parse, or fails for a plain user message."""


class NoChatTemplateError(KanibookError, ValueError):
    """The model has no chat template, so it cannot chat (it can still score and continue plain text)."""

    def __init__(self, message: str | None = None):
        super().__init__(
            message
            or "This model has no chat template (a base model?): chat needs one, load it with chat_template='t.jinja' "
            "(or %kani load MODEL --chat-template FILE); score_text, the prompt view of plain text and the "
            "quantization lab work without it. Nothing was sent."
        )


def read_chat_template(value: str | os.PathLike) -> str:
    """The template's text from a Jinja string or a file's path, checked: it parses and renders a user message.

    :raises ChatTemplateError: one line naming the file (or "the given template") and what is wrong.
    """
    if isinstance(value, os.PathLike) or (isinstance(value, str) and "{" not in value):
        path = Path(os.fspath(value)).expanduser()
        if not path.is_file():
            raise ChatTemplateError(
                f"No chat template file at {path}: pass a .jinja file's path or the template's text; nothing was loaded."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ChatTemplateError(f"Could not read the chat template {path} ({type(e).__name__}: {e}); nothing was "
                                    "loaded.") from None  # fmt: skip
        where = str(path)
    elif isinstance(value, str):
        text, where = value, "the given chat template"
    else:
        raise ChatTemplateError(f"chat_template= takes a Jinja string or a file's path, not {type(value).__name__}.")
    if not text.strip():
        raise ChatTemplateError(f"{where} is empty: a chat template is Jinja text; nothing was loaded.")
    check_template(text, where)
    return text


def check_template(text: str, where: str) -> None:
    """Parse ``text`` as transformers does and render one user message; failures become one line."""
    import jinja2

    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(text)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"{where} does not parse: {e.message} (line {e.lineno}); fix the template, nothing was loaded."
        ) from None
    except ImportError:  # another transformers: parsing is all that can be checked
        try:
            jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(
                f"{where} does not parse: {e.message} (line {e.lineno}); fix the template, nothing was loaded."
            ) from None
        return
    try:
        compiled.render(messages=_PROBE, add_generation_prompt=True, bos_token="<s>", eos_token="</s>", tools=None,
                        documents=None)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - jinja2's and the template's own errors (raise_exception): one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ChatTemplateError(
            f"{where} fails for a single user message ({type(e).__name__}: {first}); fix the template, nothing was "
            "loaded."
        ) from None


def set_chat_template(processor_or_tokenizer, text: str) -> None:
    """Give a tokenizer (and a processor's tokenizer) the template."""
    processor_or_tokenizer.chat_template = text
    inner = getattr(processor_or_tokenizer, "tokenizer", None)
    if inner is not None and inner is not processor_or_tokenizer:
        inner.chat_template = text


def has_chat_template(engine) -> bool:
    """Whether ``engine`` can build a chat prompt: a hand-written pipeline, or a chat template in its tokenizer."""
    pipeline = getattr(engine, "pipeline", None)
    if pipeline is None:
        return False
    from kani.engines.huggingface.chat_template_pipeline import ChatTemplatePromptPipeline

    if not isinstance(pipeline, ChatTemplatePromptPipeline):
        return True
    tok = pipeline.tokenizer
    return bool(getattr(tok, "chat_template", None) or getattr(getattr(tok, "tokenizer", None), "chat_template", None))


def plain_text(messages) -> str:
    """A conversation as plain text (its messages' texts, one after another), as a model without a template reads it."""
    return "\n\n".join(m.text for m in messages if m.text)
