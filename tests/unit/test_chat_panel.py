"""The chat panel, driven like a person would (real widgets: ``.click()``, ``.value``) inside a running event loop.

The demo model (fixture ``demo_engine``) serves the generation tests. Where a behaviour needs something the demo
model will not do by itself (call a function, stream hundreds of tokens a second, lack ``stop()``), a small but real
kani engine (a ``BaseEngine`` subclass that replies from a script) stands in for it; the panel is never mocked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Annotated

import pytest
from kani import AIParam, ChatMessage, Kani, ToolCall, ai_function
from kani.engines.base import BaseEngine, Completion

import kanibook
from kanibook.conversation import transcript
from kanibook.exceptions import BusyError, KanibookError
from kanibook.render import safe
from kanibook.widgets._message_view import MessageView
from kanibook.widgets._settings import hyperparams_for
from kanibook.widgets._throttle import Throttle
from kanibook.widgets.chat_panel import ChatPanel

from _waits import until  # tests/unit/_waits.py

HOSTILE = "<script>alert(1)</script> \"'><img src=x onerror=alert(1)> javascript:alert(1) \u202e \x00"


class ScriptedEngine(BaseEngine):
    """A kani engine whose replies come from a script: text (streamed word by word) or a ``ToolCall``.

    :param replies: One entry per model turn.
    :param delay: Seconds between streamed pieces.
    """

    max_context_size = 4096

    def __init__(self, replies, *, delay: float = 0.0):
        self.replies = list(replies)
        self.delay = delay
        self.calls: list[tuple[list[ChatMessage], dict]] = []

    def prompt_len(self, messages, functions=None, **kwargs) -> int:
        return sum(len((m.text or "").split()) + 3 for m in messages)

    def _next(self, messages, hyperparams) -> ChatMessage:
        self.calls.append((list(messages), dict(hyperparams)))
        reply = self.replies.pop(0)
        if isinstance(reply, ToolCall):
            return ChatMessage.assistant(None, tool_calls=[reply])
        return ChatMessage.assistant(reply)

    async def predict(self, messages, functions=None, **hyperparams):
        return Completion(self._next(messages, hyperparams))

    async def stream(self, messages, functions=None, **hyperparams):
        message = self._next(messages, hyperparams)
        for i, word in enumerate((message.text or "").split(" ")):
            await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word
        yield Completion(message)


class WeatherKani(Kani):
    @ai_function()
    def get_weather(self, city: Annotated[str, AIParam(desc="The city")]):
        """Get the current weather in a city."""
        return f"Sunny in {city}. {HOSTILE}"


def classes(view) -> set[str]:
    return set(view.widget._dom_classes)


def submit(text_widget) -> None:
    """What the browser sends when Enter is pressed in an ipywidgets Text."""
    text_widget._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []})


def record_values(widget) -> list[tuple[float, str]]:
    """Every value the widget takes from now on (what would be sent to the browser), with the loop time."""
    seen: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    widget.observe(lambda change: seen.append((loop.time(), change["new"])), "value")
    return seen


# ---- the CSS-class contract ----


def test_css_contract_classes_are_present(demo_engine):
    history = [ChatMessage.user("hi"), ChatMessage.assistant("hello")]
    panel = kanibook.chat(Kani(demo_engine, system_prompt="Be brief.", chat_history=history))
    assert "kb-chat-panel" in panel.widget._dom_classes
    assert "kb-messages" in panel.message_box._dom_classes
    expected = {
        panel.input: "kb-input",
        panel.send_button: "kb-send",
        panel.stop_button: "kb-stop",
        panel.regenerate_button: "kb-regenerate",
        panel.clear_button: "kb-clear",
        panel.system_prompt: "kb-system-prompt",
        panel.status_widget: "kb-status",
        panel.context_meter: "kb-context-meter",
    }
    for widget, css in expected.items():
        assert css in widget._dom_classes, css
    assert [v.role for v in panel.messages] == ["system", "user", "assistant"]
    assert all({"kb-msg", f"kb-msg-{v.role}"} <= classes(v) for v in panel.messages)
    assert "kb-figures" in panel.messages[-1].figures._dom_classes
    assert panel.stop_button.disabled  # enabled only while generating
    assert panel.message_box.children == tuple(v.widget for v in panel.messages)
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "<ChatPanel KanibookEngine: 2 messages, ready>"
    assert "kb-chat-snapshot" in bundle["text/html"] and "hello" in bundle["text/html"]
    panel.close()


# ---- streaming ----


def test_send_click_streams_then_renders_markdown(demo_engine, run_async, no_leaked_threads):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=24, hyperparams={"min_new_tokens": 12})
        panel.input.value = "Write a short poem about the sea."
        panel.send_button.click()
        assert panel.input.value == "" and panel.busy and not panel.stop_button.disabled
        await until(lambda: len(panel.messages) == 2)
        view = panel.messages[-1]
        assert view.role == "assistant" and view.body.value == ""
        seen = record_values(view.body)
        streaming_classes = []
        view.body.observe(lambda _: streaming_classes.append("kb-msg-streaming" in classes(view)), "value")
        await panel.wait()
        return panel, view, [v for _, v in seen], streaming_classes

    panel, view, values, streaming_classes = run_async(scenario())
    reply = panel.kani.chat_history[-1]
    assert [m.role.value for m in panel.kani.chat_history] == ["user", "assistant"]
    streamed, final = values[:-1], values[-1]
    assert len(streamed) >= 3  # several throttled updates, not one lump at the end
    # the text only grows, in the order the engine produced it
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(streamed))
    assert safe.text(demo_engine.last_text).startswith(streamed[-1])
    assert streaming_classes[:-1] == [True] * len(streamed) and "kb-msg-streaming" not in classes(view)
    assert final == safe.markdown(reply.text) == view.body.value
    assert reply.text == demo_engine.last_text.strip() and view.message is reply
    assert "tok/s" in view.figures.value and "first token" in view.figures.value
    assert panel.status == "ready" and panel.stop_button.disabled and not panel.busy
    # the context meter measured the next prompt (history included)
    next_prompt = [*panel.kani.always_included_messages, *panel.kani.chat_history]
    expected = len(demo_engine.build_prompt(next_prompt)["input_ids"][0])
    assert panel.context_tokens == expected
    assert f"{expected} / {demo_engine.max_context_size}" in panel.context_meter.value


def test_enter_in_the_input_sends(run_async):
    engine = ScriptedEngine(["Hello there, friend."])

    async def scenario():
        panel = kanibook.chat(engine)
        panel.input.value = "  hi  "
        submit(panel.input)
        await panel.wait()
        submit(panel.input)  # empty input: nothing is sent
        await panel.wait()
        return panel

    panel = run_async(scenario())
    assert [m.text for m in panel.kani.chat_history] == ["  hi  ", "Hello there, friend."]
    assert len(engine.calls) == 1 and panel.input.value == ""
    # the settings became the engine's hyperparameters
    assert engine.calls[0][1] == {"max_new_tokens": 256, "do_sample": False}


def test_stop_button_ends_generation_within_a_token_and_keeps_partial(demo_engine, run_async, no_leaked_threads):
    long = {"max_new_tokens": 200, "min_new_tokens": 200}

    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=200, hyperparams=long)
        panel.send("Write a long story about a dragon who learns to bake bread.")
        await until(lambda: len(panel.messages) == 2 and panel.messages[-1].pieces >= 3)
        # a second message while the reply streams is refused visibly, and not interleaved
        panel.input.value = "second message"
        panel.send_button.click()
        refused_status, kept_input = panel.status, panel.input.value
        with pytest.raises(BusyError):
            panel.send("third")
        with pytest.raises(BusyError):
            panel.regenerate()
        assert not panel.stop_button.disabled
        panel.stop_button.click()
        await panel.wait()
        return panel, refused_status, kept_input

    panel, refused_status, kept_input = run_async(scenario())
    assert refused_status.startswith("busy") and kept_input == "second message"
    stats = demo_engine.last_stats
    assert stats.stopped and stats.tokens_after_stop <= 1
    assert 3 <= stats.completion_tokens < 60  # far below the 200 asked for
    history = panel.kani.chat_history
    assert [m.role.value for m in history] == ["user", "assistant"]  # the refused messages never reached kani
    view = panel.messages[-1]
    assert transcript.is_stopped(history[-1]) and history[-1].text == demo_engine.last_text.strip()
    assert "kb-msg-stopped" in classes(view) and view.stopped and "stopped" in view.figures.value
    assert panel.status == "stopped" and panel.stop_button.disabled


def test_stop_on_an_engine_without_stop_cancels_and_keeps_partial(run_async):
    engine = ScriptedEngine([" ".join(f"w{i}" for i in range(400)), "after stop"], delay=0.01)

    async def scenario():
        panel = kanibook.chat(engine)
        panel.send("count")
        await until(lambda: len(panel.messages) == 2 and panel.messages[-1].pieces >= 5)
        panel.stop()
        await panel.wait()
        stopped_status = panel.status
        panel.send("again")  # kani's lock was released: the next round runs
        await panel.wait()
        return panel, stopped_status

    panel, stopped_status = run_async(scenario())
    history = panel.kani.chat_history
    assert stopped_status == "stopped"
    assert [m.role.value for m in history] == ["user", "assistant", "user", "assistant"]
    assert transcript.is_stopped(history[1]) and history[1].text.startswith("w0 w1 w2 w3")
    assert len(history[1].text.split()) < 200
    assert "kb-msg-stopped" in classes(panel.messages[1]) and history[3].text == "after stop"


def test_generation_error_is_shown_and_user_message_kept(demo_engine, run_async, no_leaked_threads):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=4, hyperparams={"not_a_generate_argument": 1})
        panel.input.value = "Hello <b>model</b>"
        panel.send_button.click()
        await panel.wait()
        after_error = (list(panel.kani.chat_history), [v.role for v in panel.messages], panel.status)
        error_view = panel.messages[-1]
        panel.hyperparams.clear()  # fix the mistake and try again
        panel.regenerate_button.click()
        await panel.wait()
        return panel, after_error, error_view

    panel, (history, roles, status), error_view = run_async(scenario())
    assert [m.role.value for m in history] == ["user"] and history[0].text == "Hello <b>model</b>"
    assert roles == ["user", "error"]
    assert "kb-msg-error" in classes(error_view) and "GenerationError" in error_view.body.value
    assert "\n" not in error_view.body.value and "not_a_generate_argument" in error_view.body.value
    assert status.startswith("error: ") and "\n" not in status
    # Regenerate answered the kept user message; the error line is gone
    assert [m.role.value for m in panel.kani.chat_history] == ["user", "assistant"]
    assert [v.role for v in panel.messages] == ["user", "assistant"] and panel.status == "ready"


def test_regenerate_drops_the_last_reply_before_generating(demo_engine, run_async, no_leaked_threads):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=6)
        panel.send("Name a color.")
        await panel.wait()
        first = panel.kani.chat_history[-1]
        panel.regenerate_button.click()
        await panel.wait()
        return panel, first

    panel, first = run_async(scenario())
    history = panel.kani.chat_history
    assert [m.role.value for m in history] == ["user", "assistant"] and history[-1] is not first
    assert [v.role for v in panel.messages] == ["user", "assistant"] and panel.messages[-1].message is history[-1]
    # the regenerated reply was prompted with the user message only: the old reply was dropped first
    assert demo_engine.last_stats.prompt_tokens == len(demo_engine.build_prompt(history[:1])["input_ids"][0])


def test_clear_forgets_the_conversation_but_keeps_the_system_prompt(run_async):
    engine = ScriptedEngine(["one", "two"])

    async def scenario():
        panel = kanibook.chat(engine, system_prompt="Stay calm.")
        panel.send("a")
        await panel.wait()
        before = panel.context_tokens
        panel.clear_button.click()
        await panel.wait()
        return panel, before

    panel, before = run_async(scenario())
    assert panel.kani.chat_history == [] and [v.role for v in panel.messages] == ["system"]
    assert panel.kani.always_included_messages[0].text == "Stay calm." and panel.status == "cleared"
    assert panel.context_tokens == engine.prompt_len(panel.kani.always_included_messages) < before


def test_system_prompt_edit_reaches_the_models_prompt(demo_engine, run_async, no_leaked_threads):
    prompt = "You are Zorblax, a pirate <b>captain</b>."

    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=2)
        panel.system_prompt.value = f"  {prompt}\n"
        panel.send("Who are you?")
        await panel.wait()
        return panel

    panel = run_async(scenario())
    assert panel.kani.system_prompt == prompt and panel.messages[0].role == "system"
    assert safe.text(prompt) in panel.messages[0].body.value
    sent = [*panel.kani.always_included_messages, *panel.kani.chat_history[:-1]]
    ids = demo_engine.build_prompt(sent)["input_ids"][0].tolist()
    assert len(ids) == demo_engine.last_stats.prompt_tokens  # this is the prompt the model received
    text = demo_engine.tokenizer.decode(ids)
    assert prompt in text and "SmolLM" not in text  # ours replaced the template's default system prompt
    panel.set_system_prompt("")
    assert panel.kani.always_included_messages == [] and panel.system_prompt.value == ""
    assert [v.role for v in panel.messages] == ["user", "assistant"]


# ---- throttling ----


def test_fast_stream_is_throttled_to_20_updates_per_second(run_async):
    words = [f"t{i}" for i in range(600)]
    engine = ScriptedEngine([" ".join(words)], delay=0.002)

    async def scenario():
        panel = kanibook.chat(engine)
        panel.send("go")
        await until(lambda: len(panel.messages) == 2)
        seen = record_values(panel.messages[-1].body)
        await panel.wait()
        return panel, seen

    panel, seen = run_async(scenario())
    view = panel.messages[-1]
    times = [t for t, _ in seen]
    duration = times[-1] - times[0]
    assert view.pieces == 600 and duration > 0.8  # a long, fast stream (hundreds of pieces per second)
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= 22, worst  # 20 per second, plus the final render
    assert len(times) >= 10  # and still updated while streaming
    assert panel.kani.chat_history[-1].text == " ".join(words)


def test_throttle_keeps_the_newest_value(run_async):
    async def scenario():
        applied = []
        throttle = Throttle(applied.append, max_per_second=10)
        throttle.push(1)  # at once
        throttle.push(2)
        throttle.push(3)  # 2 is superseded
        assert applied == [1] and throttle.pending
        await asyncio.sleep(0.15)
        throttle.push(4)
        throttle.flush()
        throttle.push(5)
        throttle.cancel()
        await asyncio.sleep(0.15)
        return applied

    assert run_async(scenario()) == [1, 3, 4]


# ---- function calling ----


def test_function_calls_and_results_appear_as_cards(run_async):
    engine = ScriptedEngine([ToolCall.from_function("get_weather", city="Paris"), "It is sunny in Paris."])

    async def scenario():
        panel = kanibook.chat(WeatherKani(engine))
        panel.send("Weather in Paris?")
        await panel.wait()
        return panel

    panel = run_async(scenario())
    roles = [m.role.value for m in panel.kani.chat_history]
    assert roles == ["user", "assistant", "function", "assistant"]
    assert [v.role for v in panel.messages] == roles
    call_view, result_view = panel.messages[1], panel.messages[2]
    assert '<details class="kb-fn-card kb-fn-call"' in call_view.cards.value and "get_weather" in call_view.cards.value
    assert "Paris" in call_view.cards.value
    assert '<details class="kb-fn-card kb-fn-result"' in result_view.body.value
    assert "kb-msg-function" in classes(result_view)
    assert "<script" not in result_view.body.value and "<img" not in result_view.body.value
    assert safe.text(HOSTILE) in result_view.body.value  # the function really ran; its output shown as text
    # the model got the function's result in its second turn
    assert engine.calls[1][0][-1].role.value == "function"


def test_function_messages_in_an_existing_history_render_as_cards(demo_engine):
    call = ToolCall.from_function("lookup", query=HOSTILE)
    history = [
        ChatMessage.user("look it up"),
        ChatMessage.assistant(None, tool_calls=[call]),
        ChatMessage.function("lookup", "no results </details><script>x</script>", call.id, is_tool_call_error=True),
        ChatMessage.assistant("Nothing found."),
    ]
    panel = kanibook.chat(Kani(demo_engine, chat_history=history))
    views = panel.messages
    assert [v.role for v in views] == ["user", "assistant", "function", "assistant"]
    assert "lookup" in views[1].cards.value and "<img" not in views[1].cards.value
    assert "kb-fn-error" in views[2].body.value and "<script" not in views[2].body.value
    assert views[2].body.value.count("</details>") == 1  # the hostile result cannot close the card early
    panel.close()


# ---- export, constructors, settings ----


def test_export_buttons_and_methods(demo_engine, tmp_path, run_async):
    history = [ChatMessage.user(HOSTILE), ChatMessage.assistant("**bold** reply")]
    transcript.mark_stopped(history[1])

    async def scenario():
        panel = kanibook.chat(Kani(demo_engine, system_prompt="sys", chat_history=history), export_dir=tmp_path)
        panel.export_json_button.click()
        link = panel.export_link.value
        panel.export_markdown_button.click()
        return panel, link, panel.export_link.value

    panel, json_link, md_link = run_async(scenario())
    assert "kb-msg-stopped" in classes(panel.messages[-1])
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".json", ".md"]
    assert 'download="kanibook-chat-' in json_link and "data:application/json;base64," in json_link
    assert "data:text/markdown;base64," in md_link
    restored = Kani(demo_engine)
    restored.load(files[0])
    assert restored.chat_history == panel.kani.chat_history
    assert restored.always_included_messages == panel.kani.always_included_messages
    assert transcript.is_stopped(restored.chat_history[-1])
    assert panel.export_markdown(tmp_path / "t.md").read_text(encoding="utf-8") == files[1].read_text(encoding="utf-8")
    assert json.loads(panel.export_json(tmp_path / "t.json").read_text(encoding="utf-8"))["chat_history"]


def test_chat_accepts_kani_engine_or_model_and_rejects_the_rest(demo_engine):
    ai = Kani(demo_engine, system_prompt="old")
    panel = kanibook.chat(ai, system_prompt="new")
    assert panel.kani is ai and ai.always_included_messages[0].text == "new" and len(ai.always_included_messages) == 1
    assert isinstance(kanibook.chat(demo_engine), ChatPanel)
    with pytest.raises(KanibookError, match="model id"):
        kanibook.chat(42)
    with pytest.raises(KanibookError, match="load options"):
        kanibook.chat(demo_engine, quant="nf4")


def test_send_needs_a_running_loop_and_text(demo_engine):
    panel = kanibook.chat(demo_engine)
    with pytest.raises(KanibookError, match="event loop"):
        panel.send("hello")
    with pytest.raises(KanibookError, match="empty"):
        panel.send("   ")
    assert panel.kani.chat_history == [] and not panel.busy
    with pytest.raises(KanibookError, match="Nothing to regenerate"):
        panel.regenerate()


def test_settings_become_engine_hyperparameters(run_async):
    engine = ScriptedEngine(["ok"])

    async def scenario():
        panel = kanibook.chat(engine)
        panel.settings.max_new_tokens.value = 7
        panel.settings.do_sample.value = True
        panel.settings.temperature.value = 0.5
        panel.settings.top_p.value = 0.8
        assert not panel.settings.temperature.disabled
        panel.send("x")
        await panel.wait()

    run_async(scenario())
    assert engine.calls[0][1] == {"max_new_tokens": 7, "do_sample": True, "temperature": 0.5, "top_p": 0.8}
    api_engine = type("OpenAIEngine", (ScriptedEngine,), {})([])
    assert hyperparams_for(api_engine, 9, False, 0.7, 0.9) == {"max_tokens": 9, "temperature": 0.0}
    assert hyperparams_for(api_engine, 9, True, 0.7, 0.9) == {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9}


def test_cleared_views_and_a_closed_panel_leave_no_widgets_behind(demo_engine):
    from ipywidgets.widgets import widget

    from kanibook.widgets._message_view import close_widgets
    from kanibook.widgets._panel_why import why_button

    before = len(widget._instances)
    view = MessageView("user")
    per_view = len(widget._instances) - before  # its widgets, layouts and styles
    view.close()
    assert len(widget._instances) == before and per_view > 5
    counted = len(widget._instances)
    button = why_button(lambda: None)  # a reply also carries the panel's Why? button (its layout and style too)
    why_widgets = len(widget._instances) - counted
    close_widgets(button)
    history = [ChatMessage.user("hi"), ChatMessage.assistant("hello"), ChatMessage.user("bye")]
    panel = kanibook.chat(Kani(demo_engine, system_prompt="sys", chat_history=list(history)))
    opened = len(widget._instances)
    panel.clear()
    assert len(widget._instances) == opened - 3 * per_view - why_widgets
    panel.kani.chat_history.extend(history)
    panel.set_system_prompt("other")  # re-renders every view
    panel.clear()
    assert len(widget._instances) == opened - 3 * per_view - why_widgets
    panel.close()
    assert len(widget._instances) == before


def test_stop_right_after_send_leaves_the_panel_usable(demo_engine, run_async, no_leaked_threads):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=3)
        task = panel.send("Hello")
        panel.stop()  # in the same tick, before the round even started: the round is cancelled, the message kept
        await panel.wait()
        state = (task.cancelled(), panel.status, panel.stop_button.disabled, list(panel.kani.chat_history))
        panel.send("Hello again")
        await panel.wait()
        return panel, state

    panel, (cancelled, status, stop_disabled, history) = run_async(scenario())
    assert cancelled and status == "stopped" and stop_disabled
    assert [(m.role.value, m.text) for m in history] == [("user", "Hello"), ("assistant", "")]
    assert transcript.is_stopped(history[1])  # an empty reply, marked stopped, as %%chat does when interrupted early
    assert [m.role.value for m in panel.kani.chat_history] == ["user", "assistant"] * 2 and panel.status == "ready"
    assert panel.kani.chat_history[2].text == "Hello again"
    assert not demo_engine.is_generating


# ---- issue 17: the panel names its model, and chat() opens on the notebook's conversation ----


def test_header_names_the_model(demo_engine):
    from kanibook._names import model_display_name

    panel = kanibook.chat(Kani(demo_engine))
    assert f"Chat · {model_display_name(demo_engine.model_id)}" in panel.title.value
    assert "KanibookEngine" not in panel.title.value
    panel.close()
    scripted = kanibook.chat(ScriptedEngine([]))  # an engine that names no model: its class
    assert "Chat · ScriptedEngine" in scripted.title.value
    scripted.close()


def test_chat_without_argument_opens_the_notebooks_conversation(ip, current, monkeypatch):
    import kanibook.engine

    def no_second_model(*args, **kwargs):
        raise AssertionError("chat() loaded a second model")

    monkeypatch.setattr(kanibook.engine, "load", no_second_model)
    session = current(ScriptedEngine(["Paris, of course."]))
    ip.run_cell_magic("chat", "", "Where is the Louvre?")
    panel = kanibook.chat()
    assert panel.kani is session.kani and panel.engine is session.engine
    assert [(v.role, v.message.text) for v in panel.messages[-2:]] == [
        ("user", "Where is the Louvre?"), ("assistant", "Paris, of course.")
    ]  # fmt: skip
    panel.close()
    with_prompt = kanibook.chat(system_prompt="Answer in French.")
    assert with_prompt.kani is session.kani and session.kani.system_prompt == "Answer in French."
    with_prompt.close()
