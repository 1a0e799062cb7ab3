"""Any kani engine: kani's OpenAIEngine against ``transformers serve`` on loopback, serving the demo model.

The server is started once for the module (about 20 s) and always stopped, even when a test fails.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from kani import ChatMessage, ChatRole, Kani

import kanibook
from kanibook.magics import views as _magic_views
from kanibook.openai_compat import CharEstimateCounter, HFTokenCounter, openai_engine
from kanibook.render import safe
from kanibook.conversation.session import ChatSession, set_current_session

from _servers import free_port, running  # tests/unit/_servers.py

pytestmark = [pytest.mark.server, pytest.mark.slow]

QUESTION = "What is the capital of France?"
STORY = "Write a long story about a dragon who learns to bake bread."


@pytest.fixture(scope="module")
def server(demo_model_dir, tmp_path_factory):
    """``transformers serve`` on a free loopback port; yields the API root. Stopped however the tests end."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    command = [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port), str(demo_model_dir)]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running("transformers serve", command, f"http://127.0.0.1:{port}/health", log):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def engine(server, demo_model_dir):
    return openai_engine(server, tokenizer=demo_model_dir, temperature=0)


def test_engine_finds_the_served_model_and_its_context(engine, demo_model_dir):
    assert os.path.samefile(engine.model, demo_model_dir)  # from GET /v1/models
    assert engine.max_context_size == 8192  # from the folder's config.json
    assert isinstance(engine.counter, HFTokenCounter)


def test_round_and_streamed_round_through_kani(engine, run_async):
    ai = Kani(engine)
    prompt_len = engine.prompt_len([ChatMessage.user(QUESTION)])

    async def rounds():
        reply = await ai.chat_round(QUESTION, max_tokens=24)
        stream = ai.chat_round_stream("And of Italy?", max_tokens=24)
        pieces = [piece async for piece in stream]
        completion = await stream.completion()
        return reply, pieces, completion

    reply, pieces, completion = run_async(rounds())
    assert reply.text
    # offline token counting with the model's own chat template equals what the server counted
    assert reply.extra["openai_completion"]["usage"]["prompt_tokens"] == prompt_len
    assert len(pieces) > 3 and completion.message.text == "".join(pieces).strip()
    assert completion.completion_tokens <= 24
    assert [m.role for m in ai.chat_history] == [ChatRole.USER, ChatRole.ASSISTANT] * 2
    assert completion.prompt_tokens == engine.prompt_len(ai.chat_history[:-1])


def test_no_tokenizer_counts_without_tiktoken(server, run_async, monkeypatch):
    import tiktoken

    def no_download(*args, **kwargs):
        raise AssertionError("tiktoken was asked for an encoding (it would download one)")

    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    monkeypatch.setattr(tiktoken, "encoding_for_model", no_download)
    engine = openai_engine(server, max_context_size=8192)
    assert isinstance(engine.counter, CharEstimateCounter)
    assert engine.prompt_len([ChatMessage.user("x" * 40)]) == 7 + 10  # kani's per-message overhead + chars / 4
    reply = run_async(Kani(engine).chat_round_str(QUESTION, max_tokens=12))
    assert reply


def test_one_engine_serves_several_event_loops(server, demo_model_dir, run_async):
    """The panel runs on the kernel's loop and %%chat on the session's: the same engine must work on both.

    With no retries, kani's own OpenAIEngine fails here on the second loop ("Connection error": its pooled
    connection belongs to the first, closed loop).
    """
    engine = openai_engine(server, tokenizer=demo_model_dir, retry=0)
    ai = Kani(engine)
    for question in ("Hi", "Hello"):
        assert run_async(ai.chat_round_str(question, max_tokens=4))  # a fresh event loop each time


def test_chat_magic_against_the_server(ip, engine):
    session = ChatSession(engine)
    previous = set_current_session(session)
    try:
        with capture_output() as captured:
            ip.run_cell_magic("chat", "--max-new-tokens 16 --temperature 0", QUESTION)
        outputs = [o.data for o in captured.outputs]
        streaming = [d["text/plain"] for d in outputs[:-1]]
        assert len(streaming) >= 2
        for before, after in itertools.pairwise(streaming):
            assert after.startswith(before)
        reply = session.history[-1]
        assert reply.role == ChatRole.ASSISTANT and streaming[-1] == reply.text
        assert safe.markdown(reply.text) in outputs[-1]["text/html"]
        assert reply.extra["openai_usage"]["completion_tokens"] <= 16  # --max-new-tokens became max_tokens
    finally:
        session.close()
        set_current_session(previous)


def test_interrupt_cancels_the_server_stream_and_keeps_the_partial_reply(ip, engine, monkeypatch):
    session = ChatSession(engine)
    previous = set_current_session(session)
    seen = []
    original = _magic_views._DisplayStream.update

    def update(stream, text):
        seen.append(text)
        original(stream, text)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(_magic_views._DisplayStream, "update", update)
    try:
        with capture_output() as captured:
            ip.run_cell_magic("chat", "--max-new-tokens 200 --temperature 0", STORY)
        assert "stopped" in captured.outputs[-1].data["text/plain"]
        assert [m.role for m in session.history] == [ChatRole.USER, ChatRole.ASSISTANT]
        assert session.history[-1].text.startswith(seen[1].strip())
        monkeypatch.undo()
        with capture_output():
            ip.run_cell_magic("chat", "--max-new-tokens 8 --temperature 0", "Go on.")
        assert len(session.history) == 4
    finally:
        session.close()
        set_current_session(previous)


def test_kani_load_with_api_base(ip, server, demo_model_dir):
    session = ChatSession()
    previous = set_current_session(session)
    try:
        with capture_output() as captured:
            ip.run_line_magic("kani", f"load --api-base {server} --tokenizer {demo_model_dir}")
        assert "LocalOpenAIEngine" in captured.stdout
        assert isinstance(session.engine.counter, HFTokenCounter)
        with capture_output():
            ip.run_cell_magic("chat", "--max-new-tokens 8 --temperature 0", QUESTION)
        reply = session.history[-1]
        assert reply.text
        assert reply.extra["openai_usage"]["prompt_tokens"] == session.engine.prompt_len(session.history[:-1])
        with pytest.raises(UsageError, match="the server's business"):
            ip.run_line_magic("kani", f"load --api-base {server} --quant nf4")
        with pytest.raises(UsageError, match="is the server running"):
            ip.run_line_magic("kani", f"load --api-base http://127.0.0.1:{free_port()}/v1")
    finally:
        session.close()
        set_current_session(previous)


def test_chat_panel_round_against_the_server(engine, run_async):
    chat_panel = pytest.importorskip("kanibook.widgets.chat_panel")
    ai = Kani(engine)

    async def scenario():
        panel = chat_panel.chat(ai, max_new_tokens=16)
        panel.send(QUESTION)
        await panel.wait()
        return panel

    panel = run_async(scenario())
    try:
        assert panel.status == "ready"
        assert [m.role for m in ai.chat_history] == [ChatRole.USER, ChatRole.ASSISTANT]
        assert ai.chat_history[-1].text
        assert ai.chat_history[-1].extra["openai_usage"]["completion_tokens"] <= 16
    finally:
        panel.close()


def test_server_engine_closes_per_loop(engine):
    async def use_and_close():
        await Kani(engine).chat_round_str("Hi", max_tokens=2)
        await engine.close()

    asyncio.run(use_and_close())
    asyncio.run(use_and_close())  # a closed client belonged to the old loop only


def test_a_server_without_logprobs_gets_a_note_then_not_available(ip, server, demo_model_dir, run_async, current):
    """``transformers serve`` ignores ``logprobs``: the reply streams as ever, says why it has no probabilities, and
    from then on the engine says "not available" instead of asking again."""
    from kanibook.probs.api import NO_LOGPROBS

    engine = openai_engine(server, tokenizer=demo_model_dir, temperature=0)
    ai = Kani(engine)
    reply = run_async(ai.chat_round_str(QUESTION, max_tokens=8, probabilities=True))
    assert reply and engine.supports_probabilities is False
    view = kanibook.show_reply(ai)
    assert len(view.probs) == 0 and view.probs.note == NO_LOGPROBS
    assert NO_LOGPROBS in view._repr_mimebundle_()["text/html"]
    session = current(engine)
    with capture_output() as captured:
        ip.run_cell_magic("chat", "--probs --max-new-tokens 8", "Hi")
    assert captured.stdout.strip().splitlines()[-1] == "probabilities: not available for this engine"
    assert session.history[-1].text
