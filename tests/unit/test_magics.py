"""The magics through IPython's own shell, with the real demo model: %kani subcommands, %%chat streaming, interrupts."""

from __future__ import annotations

import itertools
import json
import os
import queue
import time

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from kani import ChatMessage, ChatRole, Kani
from kani.engines.base import WrapperEngine

from kanibook.magics import commands as _magics, views as _magic_views
from kanibook.render import safe
from kanibook.conversation.session import ChatSession, set_current_session

HOSTILE = [
    "<script>alert(1)</script>",
    "</script>",
    "\"'><img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    "\u202eevil",
    "nul\x00and\x07bell",
]
STORY = "Write a long story about a dragon who learns to bake bread."


def _chat(ip, line: str, cell: str):
    """Run %%chat and return (captured output, the display bundles in order)."""
    with capture_output() as captured:
        ip.run_cell_magic("chat", line, cell)
    return captured, [(o.update, o.data, o.transient) for o in captured.outputs]


def _assert_inert(html: str) -> None:
    """No element or attribute that could run script or escape its box: only text and harmless tags."""
    from html.parser import HTMLParser

    found: list[tuple[str, list]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(html)
    for tag, attrs in found:
        assert tag not in ("script", "img", "iframe", "object", "embed", "svg", "style"), (tag, html)
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, html)
            assert not (value or "").strip().lower().startswith("javascript:"), (tag, value, html)
    for raw in ("\u202e", "\x00", "\x07"):
        assert raw not in html


def _ids_of(outputs):
    return {t.get("display_id") for _, _, t in outputs}


# ---- %kani: help, parsing, errors ----


def test_kani_help_lists_every_subcommand(ip):
    with capture_output() as captured:
        ip.run_cell("%kani?")
    help_text = captured.stdout
    assert "%kani [--quant QUANT]" in help_text
    for command in _magics.SUBCOMMANDS:
        assert command in help_text
    with capture_output() as captured:
        ip.run_cell("%%chat?")
    assert "--max-new-tokens" in captured.stdout and "--temperature" in captured.stdout
    assert "{name}" in captured.stdout


@pytest.mark.parametrize(
    "line, expected",
    [
        ("", "needs a subcommand"),
        ("frobnicate", "Unknown subcommand 'frobnicate'"),
        ("load --bogus", "unrecognized arguments: --bogus"),
        ("reset --quant nf4", "--quant belongs to %kani load"),
        ("history extra", "takes no arguments"),
        ("save", "needs a PATH"),
        ("save a b", "takes one PATH"),
        ('system "unclosed', "close the quotes"),
        ("load /no/such/folder", "No model folder at '/no/such/folder'"),
        ("load --quant bogus", "Unknown quant preset 'bogus'"),
        ("prompt", "the conversation is empty"),  # a KanibookError from the API, shown as one line
    ],
)
def test_kani_mistakes_are_one_line_usage_errors(ip, session, line, expected):
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("kani", line)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    # through a cell, the user sees exactly one line (no traceback)
    with capture_output() as captured:
        ip.run_cell(f"%kani {line}")
    shown = (captured.stdout + captured.stderr).strip().splitlines()
    assert shown == [f"UsageError: {message}"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("--max-new-tokens many", "invalid int value: 'many'"),
        ("--temperature hot", "invalid float value: 'hot'"),
        ("--max-new-tokens 0", "at least 1"),
        ("--temperature -1", "0 (greedy) or more"),
        ("--nope", "unrecognized arguments: --nope"),
    ],
)
def test_chat_bad_options_are_usage_errors(ip, session, line, expected):
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        ip.run_cell_magic("chat", line, "Hello")
    assert session.history == []  # nothing was sent


def test_chat_empty_cell_is_a_usage_error(ip, session):
    with pytest.raises(UsageError, match="needs a message"):
        ip.run_cell_magic("chat", "", "  \n ")


# ---- %kani load ----


def test_kani_load_default_is_the_demo_model(ip, demo_model_dir):
    fresh = ChatSession()
    previous = set_current_session(fresh)
    try:
        assert not fresh.loaded
        with capture_output() as captured:
            ip.run_line_magic("kani", "load --device cpu")
        assert fresh.loaded
        assert os.path.samefile(fresh.engine.model_id, demo_model_dir)
        assert str(fresh.engine.device) == "cpu"
        assert captured.stdout.startswith("Loaded ") and "KanibookEngine" in captured.stdout
    finally:
        fresh.close()
        set_current_session(previous)


def test_chat_loads_the_demo_model_on_first_use(ip):
    fresh = ChatSession()
    previous = set_current_session(fresh)
    try:
        captured, _ = _chat(ip, "--max-new-tokens 3 --temperature 0", "Hi")
        assert fresh.loaded and "loading the embedded demo model" in captured.stdout
        assert [m.role for m in fresh.history] == [ChatRole.USER, ChatRole.ASSISTANT]
    finally:
        fresh.close()
        set_current_session(previous)


# ---- %%chat: streaming, options, placeholders ----


def test_chat_streams_in_order_then_renders_markdown(ip, session, demo_engine):
    start = time.perf_counter()
    _, outputs = _chat(ip, "--max-new-tokens 24 --temperature 0", STORY)
    elapsed = time.perf_counter() - start
    assert outputs[0][0] is False and all(update for update, _, _ in outputs[1:])
    assert len(_ids_of(outputs)) == 1  # one output area, updated in place
    streaming = [data["text/plain"] for _, data, _ in outputs[:-1]]
    assert len(streaming) >= 4, streaming  # several updates, not one lump
    for before, after in itertools.pairwise(streaming):
        assert after.startswith(before) and len(after) > len(before)  # grows monotonically
    for _, data, _ in outputs[:-1]:
        assert "kb-streaming" in data["text/html"]
    # at most ~20 updates per second (the final render comes on top)
    assert len(outputs) - 2 <= elapsed / 0.05 + 1
    reply = session.history[-1]
    assert reply.role == ChatRole.ASSISTANT and reply.text
    assert session.history[-2].text == STORY
    final = outputs[-1][1]
    assert streaming[-1] == reply.text  # the streamed text ends equal to the conversation's reply
    assert final["text/plain"].startswith(reply.text)
    assert safe.markdown(reply.text) in final["text/html"]
    stats = demo_engine.last_stats
    assert stats.completion_tokens <= 24
    assert f"{stats.completion_tokens} tokens" in final["text/plain"] and "tokens/s" in final["text/plain"]
    assert "first token" in final["text/html"] and "peak memory" in final["text/html"]


def test_chat_options_reach_the_engine(ip, session, demo_engine):
    _chat(ip, '--system "You are a pirate. Always answer like a pirate." --max-new-tokens 5 --temperature 0', "Hello")
    assert session.system_prompt == "You are a pirate. Always answer like a pirate."
    assert session.messages[0] == ChatMessage.system("You are a pirate. Always answer like a pirate.")
    assert demo_engine.last_stats.completion_tokens <= 5
    # the model received the system prompt: it is in the prompt the engine builds for this conversation
    prompt_ids = demo_engine.build_prompt(session.messages[:-1])["input_ids"][0]
    assert demo_engine.last_stats.prompt_tokens == len(prompt_ids)
    assert "pirate" in demo_engine.tokenizer.decode(prompt_ids)
    # the system prompt is kept for later cells, and replaced (not stacked) by a new one
    _chat(ip, "--max-new-tokens 2", "Again")
    ip.run_line_magic("kani", 'system "Be terse."')
    systems = [m for m in session.messages if m.role == ChatRole.SYSTEM]
    assert [m.text for m in systems] == ["Be terse."]
    assert session.kani.system_prompt == "Be terse."


def test_generation_kwargs_in_each_engines_vocabulary(session):
    assert session.generation_kwargs(12, 0) == {"max_new_tokens": 12, "do_sample": False}
    assert session.generation_kwargs(None, 0.7) == {"do_sample": True, "temperature": 0.7}
    openai = pytest.importorskip("kanibook.openai_compat")
    other = ChatSession(openai.openai_engine("http://127.0.0.1:9/v1", model="m", max_context_size=2048))
    assert other.generation_kwargs(12, 0.5) == {"max_tokens": 12, "temperature": 0.5}


def test_chat_fills_placeholders_from_the_notebook(ip, session):
    ip.user_ns.update(city="Lyon", n=3, info={"river": "Rhône"}, evil=HOSTILE[2])
    _chat(
        ip, "--max-new-tokens 2 --temperature 0", "Name {n} facts about {city} on the {info[river]}; {{literal}} {evil}"
    )
    assert session.history[0].text == f"Name 3 facts about Lyon on the Rhône; {{literal}} {HOSTILE[2]}"


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("Tell me about {country_xyz}", "{country_xyz} is not defined in the notebook"),
        ("A dict: {1: 2}", "is not a variable name"),
        ("Unbalanced {", "write {{ and }} for literal braces"),
        ("Unbalanced }", "write {{ and }} for literal braces"),
    ],
)
def test_placeholder_mistakes_are_usage_errors(ip, session, cell, expected):
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("chat", "", cell)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert session.history == []


# ---- interrupting ----


class _InterruptAfter:
    """Patches the display's update hook to raise KeyboardInterrupt (what SIGINT does) after n updates."""

    def __init__(self, monkeypatch, n: int):
        self.n, self.seen = n, []
        original = _magic_views._DisplayStream.update

        def update(stream, text):
            self.seen.append(text)
            original(stream, text)
            if len(self.seen) == self.n:
                raise KeyboardInterrupt

        monkeypatch.setattr(_magic_views._DisplayStream, "update", update)


def test_interrupt_stops_generation_and_keeps_the_partial_reply(no_leaked_threads, ip, session, demo_engine,
                                                                 monkeypatch):  # fmt: skip
    hook = _InterruptAfter(monkeypatch, 3)
    _, outputs = _chat(ip, "--max-new-tokens 200 --temperature 0", STORY)
    stats = demo_engine.last_stats
    assert stats.stopped and stats.completion_tokens < 200
    assert stats.tokens_after_stop <= 2  # engine.stop() ends generate within about a token
    reply = session.history[-1]
    assert reply.role == ChatRole.ASSISTANT and reply.text
    assert reply.text.startswith(hook.seen[2].strip())  # the partial reply, as far as it got
    from kanibook.conversation.transcript import is_stopped

    assert is_stopped(reply)
    final = outputs[-1][1]
    assert "stopped" in final["text/plain"] and "kb-msg-stopped" in final["text/html"]
    # the next %%chat works and sees the whole conversation
    monkeypatch.undo()
    _chat(ip, "--max-new-tokens 4 --temperature 0", "Go on.")
    assert [m.role for m in session.history] == [ChatRole.USER, ChatRole.ASSISTANT] * 2
    assert not demo_engine.last_stats.stopped


class _NoStopEngine(WrapperEngine):
    """A kani engine without kanibook's stop(): the session must cancel it instead."""

    stop = None
    is_generating = False


def test_interrupt_cancels_an_engine_without_stop(no_leaked_threads, ip, demo_engine, monkeypatch):
    s = ChatSession(_NoStopEngine(demo_engine))
    previous = set_current_session(s)
    try:
        hook = _InterruptAfter(monkeypatch, 2)
        _, outputs = _chat(ip, "--max-new-tokens 200 --temperature 0", STORY)
        assert not demo_engine.is_generating  # cancelling the stream ended generate
        assert demo_engine.last_stats.stopped and demo_engine.last_stats.completion_tokens < 200
        assert [m.role for m in s.history] == [ChatRole.USER, ChatRole.ASSISTANT]
        assert s.history[-1].text.startswith(hook.seen[1].strip())
        assert "stopped" in outputs[-1][1]["text/plain"]
        monkeypatch.undo()
        _chat(ip, "--max-new-tokens 3 --temperature 0", "Go on.")
        assert len(s.history) == 4
    finally:
        s.close()
        set_current_session(previous)


class _BeamEngine(WrapperEngine):
    """The demo engine asked for beam search, which generate() refuses while streaming: a real failure inside it."""

    async def stream(self, messages, functions=None, **hyperparams):
        async for item in self.engine.stream(messages, functions, num_beams=2, **hyperparams):
            yield item


def test_generation_error_is_one_line_and_keeps_the_users_message(no_leaked_threads, ip, demo_engine):
    s = ChatSession(_BeamEngine(demo_engine))
    previous = set_current_session(s)
    try:
        with capture_output() as captured:
            result = ip.run_cell("%%chat --max-new-tokens 5\nHello there")
        assert isinstance(result.error_in_exec, UsageError)
        lines = (captured.stdout + captured.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("UsageError: The reply failed:")
        assert "kept" in lines[0] and "GenerationError" not in lines[0]
        assert [(m.role, m.text) for m in s.history] == [(ChatRole.USER, "Hello there")]
        s.use(demo_engine)  # the same conversation, a working engine: the next turn goes on from the kept message
        _chat(ip, "--max-new-tokens 3 --temperature 0", "Hello again")
        assert [m.role for m in s.history] == [ChatRole.USER, ChatRole.USER, ChatRole.ASSISTANT]
    finally:
        s.close()
        set_current_session(previous)


def test_chat_while_another_reply_streams_is_refused_and_changes_nothing(no_leaked_threads, ip, session,
                                                                          demo_engine):  # fmt: skip
    """E.g. the chat panel is replying on the kernel's loop: %%chat must refuse, not wait (it would deadlock)."""
    import asyncio
    import threading

    started = threading.Event()

    async def panel_like_round():
        stream = session.kani.chat_round_stream(STORY, max_new_tokens=200, min_new_tokens=200)
        async for _ in stream:
            started.set()
        await stream.completion()

    other = threading.Thread(target=asyncio.run, args=(panel_like_round(),))
    other.start()
    try:
        assert started.wait(60)
        with pytest.raises(UsageError, match="still being generated"):
            ip.run_cell_magic("chat", "--system 'Changed.'", "Interleaved?")
    finally:
        demo_engine.stop()
        other.join(60)
    assert session.system_prompt is None
    assert [m.text for m in session.history if m.role == ChatRole.USER] == [STORY]


# ---- %kani reset / history / save / system ----


def test_history_save_reset_round_trip_with_kani(ip, session, demo_engine, tmp_path):
    ip.run_line_magic("kani", "system 'You are helpful.'")
    ip.user_ns["evil"] = " ".join(HOSTILE)
    _chat(ip, "--max-new-tokens 6 --temperature 0", "Repeat this: {evil}")
    view = ip.run_line_magic("kani", "history")
    bundle = view._repr_mimebundle_()
    assert "user: Repeat this:" in bundle["text/plain"] and "system: You are helpful." in bundle["text/plain"]
    html = bundle["text/html"]
    _assert_inert(html)
    assert safe.text(HOSTILE[0]) in html and safe.text(HOSTILE[2]) in html
    path = tmp_path / "chat.json"
    with capture_output() as captured:
        ip.run_line_magic("kani", f"save {path}")
    assert "Saved 2 messages" in captured.stdout
    json.loads(path.read_text())
    loaded = Kani(demo_engine)
    loaded.load(path)
    assert [(m.role, m.text) for m in loaded.chat_history] == [(m.role, m.text) for m in session.history]
    assert [m.text for m in loaded.always_included_messages] == ["You are helpful."]
    with capture_output():
        ip.run_line_magic("kani", "reset")
    assert session.history == [] and session.system_prompt == "You are helpful."
    assert ip.run_line_magic("kani", "history")._repr_mimebundle_()["text/plain"] == "system: You are helpful."
    session.load_history(path)
    assert len(session.history) == 2 and session.system_prompt == "You are helpful."
    with pytest.raises(UsageError, match="pick a writable path"):
        ip.run_line_magic("kani", f"save {tmp_path / 'missing' / 'dir' / 'x.json'}")


def test_system_without_text_shows_it(ip, session):
    with capture_output() as captured:
        ip.run_line_magic("kani", "system")
    assert captured.stdout.strip() == "System prompt: None"


def test_reply_view_escapes_hostile_text():
    text = "\n".join(HOSTILE) + "\n[click](javascript:alert(1))"
    for view in (_magic_views.ReplyView(text), _magic_views.ReplyView(text, done=True, stopped=True, error=HOSTILE[0])):
        _assert_inert(view._repr_mimebundle_()["text/html"])
        assert view._repr_mimebundle_()["text/plain"].startswith(text)


# ---- views from other modules ----


def test_chat_subcommand_opens_the_panel_on_the_session(ip, session):
    pytest.importorskip("kanibook.widgets.chat_panel")
    panel = ip.run_line_magic("kani", "chat")
    assert panel.kani is session.kani
    assert "kb-chat-panel" in panel.widget._dom_classes


@pytest.mark.parametrize("command", ["prompt", "tokens"])
def test_prompt_subcommands_show_the_sessions_prompt(ip, session, command):
    pytest.importorskip("kanibook.prompt")
    _chat(ip, "--max-new-tokens 2 --temperature 0", "Hi")
    view = ip.run_line_magic("kani", command)
    bundle = view._repr_mimebundle_()
    assert "Hi" in bundle["text/plain"] and "text/html" in bundle


def test_memory_subcommand(ip, session):
    pytest.importorskip("kanibook.memory_view")
    view = ip.run_line_magic("kani", "memory")
    bundle = view._repr_mimebundle_()
    assert bundle["text/plain"] and bundle["text/html"]


# ---- a plain terminal shell ----


def test_chat_in_a_terminal_prints_as_it_streams(ip, session, capsys):
    assert type(ip.display_pub).__name__ == "DisplayPublisher"  # the terminal's own (no capture_output here)
    ip.run_cell_magic("chat", "--max-new-tokens 8 --temperature 0", "What is the capital of France?")
    out = capsys.readouterr().out
    reply = session.history[-1].text
    assert out.startswith(reply) and "tokens/s" in out


# ---- a real kernel (ipykernel through jupyter_client): the stop button ----


@pytest.mark.slow
def test_kernel_interrupt_keeps_partial_reply_and_next_chat_works(tmp_path, demo_model_dir):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "PYTHONWARNINGS": "ignore"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)

        def run(code: str, interrupt_at_chars: int | None = None, timeout: float = 120):
            msg_id, texts, errors, interrupted = kc.execute(code), [], [], False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg = kc.get_iopub_msg(timeout=1)
                except queue.Empty:
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind in ("display_data", "update_display_data"):
                    texts.append(content["data"].get("text/plain", ""))
                    if interrupt_at_chars and not interrupted and len(texts[-1]) >= interrupt_at_chars:
                        km.interrupt_kernel()  # what the notebook's stop button does
                        interrupted = True
                elif kind == "stream":
                    texts.append(content["text"])
                elif kind == "error":
                    errors.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return texts, errors, interrupted
            raise TimeoutError(code)

        _, errors, _ = run(f"%load_ext kanibook\n%kani load {demo_model_dir}")
        assert not errors
        texts, errors, interrupted = run(f"%%chat --max-new-tokens 300 --temperature 0\n{STORY}", 30)
        assert interrupted and not errors, errors
        assert "stopped" in texts[-1]
        texts, errors, _ = run(
            "from kanibook.conversation.session import current_session\n"
            "s = current_session()\n"
            "print([m.role.value for m in s.history], s.engine.last_stats.stopped, s.engine.last_stats.completion_tokens)"
        )
        out = texts[-1].strip()
        assert out.startswith("['user', 'assistant'] True "), out
        assert int(out.split()[-1]) < 300
        texts, errors, _ = run("%%chat --max-new-tokens 8 --temperature 0\nWhat is the capital of France?")
        assert not errors and "stopped" not in texts[-1]
        texts, _, _ = run("print(len(current_session().history))")
        assert texts[-1].strip() == "4"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
