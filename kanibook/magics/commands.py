"""IPython magics: ``%kani`` (subcommands) and ``%%chat``. They parse arguments and call the Python API, nothing more.

The conversation lives in :class:`kanibook.conversation.session.ChatSession` (:func:`~kanibook.conversation.session.current_session`); the
views come from :mod:`kanibook.prompt`, :mod:`kanibook.memory_view` and the chat panel. User mistakes become
``UsageError``: one line that says what to do, no traceback.
"""

from __future__ import annotations

import re
import shlex
import string
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from .views import HistoryView, _stream_view
from .._names import model_display_name
from ..exceptions import KanibookError, check_text

__all__ = ["KaniMagics", "fill_placeholders", "register"]

SUBCOMMANDS = ("load", "chat", "prompt", "tokens", "memory", "quant", "reset", "history", "save", "system")


@magics_class
class KaniMagics(Magics):
    """``%kani`` and ``%%chat`` over :func:`kanibook.conversation.session.current_session`."""

    @magic_arguments()
    @argument("subcommand", nargs="?", help="one of: " + ", ".join(SUBCOMMANDS))
    @argument("args", nargs="*", help="the subcommand's arguments (a model id, a path, a system prompt)")
    @argument("--quant", help="load: quantization preset (int8, nf4, nf4-dq, fp4, fp4-dq, fp32, bf16, fp16)")
    @argument("--device", help="load: device to run on (cpu, cuda, cuda:1, mps)")
    @argument("--api-base", help="load: an OpenAI-compatible server's API root, e.g. http://127.0.0.1:8000/v1")
    @argument("--tokenizer", help="load with --api-base: the served model's local folder, to count tokens offline")
    @argument("--chat-template", help="load: a chat template file (.jinja) to use, e.g. for a base model without one")
    @argument("--backend", help="load: transformers (default) or llama.cpp (a GGUF file run natively)")
    @argument("--model", help="prompt: show the conversation through this model's chat template (id or folder; "
              "its tokenizer only, no weights)")  # fmt: skip
    @argument("--settings", help="quant: settings to compare, comma-separated (default: all this machine runs)")
    @line_magic
    def kani(self, line: str):
        """Work with the notebook's conversation and model.

        Subcommands::

            %kani load [MODEL] [--quant nf4] [--device cpu]   load a model (default: the embedded demo model)
            %kani load MODEL --chat-template FILE   ... with this chat template (e.g. a base model)
            %kani load FILE.gguf --backend llama.cpp   run a GGUF file natively with llama.cpp
            %kani load --api-base URL [MODEL] [--tokenizer FOLDER]   use an OpenAI-compatible server
            %kani chat                open the chat panel
            %kani prompt | tokens     show the templated prompt as tokens
            %kani prompt --model ID   the same conversation through another model's template (tokenizer only)
            %kani memory              show memory use
            %kani quant [MODEL] [--settings fp32,int8,nf4]   compare quantization settings (cost and quality)
            %kani reset               forget the conversation
            %kani history             show the conversation
            %kani save PATH           save the conversation as kani JSON
            %kani system "TEXT"       set the system prompt (no TEXT: show it)

        ``%%chat`` sends the cell as a message; see ``%%chat?``.
        """
        args = _parse(self.kani, line, "%kani")
        command = args.subcommand
        if command is None:
            raise UsageError("%kani needs a subcommand: one of " + ", ".join(SUBCOMMANDS) + " (see %kani?).")
        if command not in SUBCOMMANDS:
            raise UsageError(f"Unknown subcommand {command!r}: use one of " + ", ".join(SUBCOMMANDS) + " (see %kani?).")
        load_only = [name for name in ("quant", "device", "api_base", "tokenizer", "chat_template", "backend")
                     if getattr(args, name) is not None]  # fmt: skip
        if load_only and command != "load":
            raise UsageError(f"--{load_only[0].replace('_', '-')} belongs to %kani load, not %kani {command}.")
        if args.model is not None and command not in ("prompt", "tokens"):
            raise UsageError(f"--model belongs to %kani prompt, not %kani {command}.")
        if args.settings is not None and command != "quant":
            raise UsageError(f"--settings belongs to %kani quant, not %kani {command}.")
        try:
            return getattr(self, f"_kani_{command}")(args)
        except KanibookError as e:  # e.g. %kani prompt on an empty conversation: one line, no traceback
            raise UsageError(str(e)) from None

    # ---- %kani subcommands ----

    def _kani_load(self, args):
        model = _one_arg(args, "load", "MODEL", required=False)
        session = _session()
        extra = {k: v for k, v in (("chat_template", args.chat_template), ("backend", args.backend)) if v is not None}
        if extra and args.api_base is not None:
            raise UsageError("--chat-template and --backend are for local models, not --api-base (the server applies "
                             "its own template).")  # fmt: skip
        try:
            engine = session.load(model, quant=args.quant, device=args.device, api_base=args.api_base,
                                  tokenizer=args.tokenizer, **extra)  # fmt: skip
        except KanibookError as e:
            raise UsageError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - transformers / bitsandbytes / network errors: one line
            raise UsageError(
                f"Could not load {model or 'the demo model'!r} ({type(e).__name__}: {_first_line(e)}): "
                "pass a local folder or a Hugging Face id in the local cache."
            ) from None
        print(f"Loaded {_engine_label(engine)}.")

    def _kani_chat(self, args):
        _no_args(args, "chat")
        from ..widgets.chat_panel import chat

        return chat(_loaded_kani())

    def _kani_prompt(self, args):
        _no_args(args, args.subcommand)
        from ..prompt import show_prompt

        if args.model is None:
            return show_prompt(_loaded_kani())
        session = _session()
        messages = session.messages
        if not messages and session.system_prompt:
            from kani import ChatMessage

            messages = [ChatMessage.system(session.system_prompt)]
        if not messages:
            raise UsageError("The conversation is empty: chat first (%%chat), or use kanibook.show_prompt(MODEL, "
                             "[ChatMessage.user('...')]).")  # fmt: skip
        return show_prompt(args.model, messages)

    _kani_tokens = _kani_prompt

    def _kani_memory(self, args):
        _no_args(args, "memory")
        from ..memory_view import memory

        return memory()

    def _kani_quant(self, args):
        model = _one_arg(args, "quant", "MODEL", required=False)
        from ..quant.presets import PRESETS

        settings = None
        if args.settings is not None:
            settings = [s.strip().lower() for s in args.settings.split(",") if s.strip()]
            unknown = [s for s in settings if s not in PRESETS]
            if unknown or not settings:
                raise UsageError(f"Unknown setting {unknown[0] if unknown else args.settings!r}: use "
                                 f"--settings with one or more of {','.join(PRESETS)} (comma-separated).")  # fmt: skip
        from ..quant.lab import compare_quantization

        try:
            return compare_quantization(model, settings)
        except KanibookError:
            raise
        except Exception as e:  # noqa: BLE001 - the model could not be read: one line
            raise UsageError(
                f"Could not compare {model or 'the demo model'!r} ({type(e).__name__}: {_first_line(e)}): "
                "pass a local folder or a Hugging Face id in the local cache."
            ) from None

    def _kani_reset(self, args):
        _no_args(args, "reset")
        _session().reset()
        print("Conversation cleared (the system prompt and the model stay).")

    def _kani_history(self, args):
        _no_args(args, "history")
        return HistoryView(_session().messages)

    def _kani_save(self, args):
        path = _one_arg(args, "save", "PATH", required=True)
        session = _session()
        try:
            session.save_history(path)
        except KanibookError as e:
            raise UsageError(str(e)) from None
        print(f"Saved {len(session.history)} messages to {path} (load with Kani.load or session.load_history).")

    def _kani_system(self, args):
        session = _session()
        if not args.args:
            print(f"System prompt: {session.system_prompt!r}")
            return
        session.system_prompt = " ".join(args.args)
        print("System prompt set.")

    # ---- %%chat ----

    @magic_arguments()
    @argument("--system", help="set the conversation's system prompt (kept for later cells)")
    @argument("--max-new-tokens", type=int, help="the most tokens to generate")
    @argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    @argument("--image", action="append", default=[], metavar="VAR",
              help="attach the image in notebook variable VAR (a PIL image, an array, a path); repeatable")
    @argument("--audio", action="append", default=[], metavar="VAR",
              help="attach the sound in notebook variable VAR ((samples, rate), a WAV path); repeatable")
    @argument("--probs", action="store_true", help="record and show what the model considered at every token")
    @argument("--why", action="store_true", help="after the reply, show what it rests on: the drop of its "
              "probability without each message (kanibook.explain_reply)")  # fmt: skip
    @cell_magic
    def chat(self, line: str, cell: str):
        """Send the cell as a message to the notebook's conversation and stream the reply below it.

        ``{name}`` in the cell is replaced by the notebook variable ``name`` (``{{`` and ``}}`` for literal braces).
        ``--image img`` / ``--audio clip`` attach the image or sound held by a notebook variable; they are shown above
        the reply.
        Interrupt the kernel (the stop button) to stop the reply: the partial reply is kept and marked stopped.
        """
        args = _parse(self.chat, line, "%%chat")
        if args.max_new_tokens is not None and args.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1.")
        if args.temperature is not None and args.temperature < 0:
            raise UsageError("--temperature must be 0 (greedy) or more.")
        message = fill_placeholders(cell or "", self.shell.user_ns).strip()
        if not message:
            raise UsageError("%%chat needs a message: write it in the cell below the %%chat line.")
        session = _session()
        kani = _loaded_kani()
        media, captions = [], []
        try:
            check_text(message)
            session.check_ready()
            if args.image or args.audio:  # read and checked against the model before anything is sent
                from ..media import check_media, user_parts
                from ..media.view import media_from_variables

                media, captions = media_from_variables(args.image, args.audio, self.shell.user_ns)
                check_media(kani.engine, [*session.messages, user_parts(message, *media)])
            session.check_sendable(message, media or None)  # no template, refused, too long: before anything shows
        except KanibookError as e:  # busy, unreadable media, text no tokenizer can encode: nothing is sent
            raise UsageError(str(e)) from None
        if args.system is not None:
            session.system_prompt = args.system
        hyperparams = session.generation_kwargs(args.max_new_tokens, args.temperature)
        probs = args.probs and getattr(session.engine, "supports_probabilities", False)
        if probs:
            hyperparams["probabilities"] = True
        view = _stream_view(self.shell)
        if media:
            from ..media.view import MediaView

            view.show(MediaView(media, captions))
        view.start()
        result = session.send(message, media=media or None, on_text=view.update, **hyperparams)
        coloured, unrecorded = None, None
        if probs and not result.error and session.history and session.history[-1].role.value == "assistant":
            from ..probs.view import show_reply

            try:
                coloured = show_reply(session.kani)
            except KanibookError as e:  # e.g. a reply cancelled before it finished: nothing was recorded
                unrecorded = str(e)
        view.finish(result, probs=coloured)  # the coloured reply replaces the streamed one: shown once
        if args.probs and not probs:
            print("probabilities: not available for this engine")
        elif unrecorded:
            print(unrecorded)
        if args.why and not result.error and session.history and session.history[-1].role.value == "assistant":
            from .views import show_why

            show_why(session.kani)

        if result.error:
            kept = "" if "kept" in result.error else " (your message is kept in the conversation)"
            raise UsageError(f"The reply failed: {result.error}{kept}")


def register(ipython) -> None:
    """Register the magics with ``ipython`` (called by ``%load_ext kanibook``)."""
    ipython.register_magics(KaniMagics)
    # A torch pool left by the cell on this (the kernel's main) thread would halve the model thread's speed; only
    # the thread that owns it can release it, so do it after every cell (a null check when there is none).
    if _release_after_cell not in ipython.events.callbacks["post_run_cell"]:
        ipython.events.register("post_run_cell", _release_after_cell)


def _release_after_cell(result=None) -> None:
    from ..engine._model_thread import release_cpu_threads

    release_cpu_threads()


# ---- parsing helpers ----


def _parse(magic, line: str, name: str):
    """Parse with the magic's argparse parser; quotes are shell-like (``"two words"`` is one argument, unquoted)."""
    try:
        return magic.parser.parse_args(shlex.split(line))
    except UsageError as e:
        raise UsageError(f"{name}: {e} (see {name}?).") from None
    except ValueError as e:  # unbalanced quotes
        raise UsageError(f"{name}: {e}: close the quotes (see {name}?).") from None


def _one_arg(args, command: str, what: str, required: bool) -> str | None:
    if len(args.args) > 1:
        raise UsageError(f"%kani {command} takes one {what}; put a {what} with spaces in quotes.")
    if required and not args.args:
        raise UsageError(f"%kani {command} needs a {what}, e.g. %kani {command} chat.json")
    return args.args[0] if args.args else None


def _no_args(args, command: str) -> None:
    if args.args:
        raise UsageError(f"%kani {command} takes no arguments (got {' '.join(args.args)!r}).")


def _session():
    from ..conversation.session import current_session

    return current_session()


def _loaded_kani():
    """The session's Kani, loading the demo model first if nothing was loaded; failures as UsageError."""
    session = _session()
    if session.loaded:
        return session.kani
    print("No model loaded yet: loading the embedded demo model (use %kani load MODEL for another).")
    try:
        return session.kani
    except Exception as e:  # noqa: BLE001 - whatever failed, the user gets one line and what to do
        raise UsageError(
            f"The embedded demo model could not be loaded ({type(e).__name__}: {_first_line(e)}): "
            "run %kani load MODEL with a local folder."
        ) from None


_NAME = re.compile(r"[^.\[]*")


def fill_placeholders(template: str, namespace: dict[str, Any]) -> str:
    """Fill ``{name}`` placeholders from ``namespace`` (``str.format`` rules); mistakes become ``UsageError``.

    :param template: The text with placeholders; ``{{`` and ``}}`` are literal braces.
    :param namespace: The variables (the notebook's user namespace).
    """
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as e:
        raise UsageError(f"%%chat: {e} in the message: write {{{{ and }}}} for literal braces.") from None
    for field in fields:
        root = _NAME.match(field).group()
        if not root.isidentifier():
            raise UsageError(f"%%chat: {{{field}}} is not a variable name: write {{{{ and }}}} for literal braces.")
        if root not in namespace:
            raise UsageError(
                f"%%chat: {{{root}}} is not defined in the notebook: set {root} = ... first, "
                f"or write {{{{{root}}}}} for literal braces."
            )
    try:
        return template.format_map(namespace)
    except Exception as e:  # noqa: BLE001 - an attribute or item that fails: one line
        raise UsageError(f"%%chat: could not fill the placeholders ({type(e).__name__}: {_first_line(e)}).") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _engine_label(engine) -> str:
    line = getattr(engine, "load_line", None)
    if isinstance(line, str):  # kanibook's engines: the dtype, and a missing chat template, said
        return line
    name = model_display_name(getattr(engine, "model_id", None) or getattr(engine, "model", None) or "?")
    device = getattr(engine, "device", None)
    where = f" on {device}" if device is not None else ""
    return f"{name} ({type(engine).__name__}{where}, context {engine.max_context_size} tokens)"
