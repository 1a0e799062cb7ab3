"""Probabilities through an OpenAI-compatible server: llama.cpp's server (serving the embedded model's GGUF) sends
``logprobs``, and kanibook records them live like a local generation; a server that ignores the request is covered
in test_openai_server.py."""

from __future__ import annotations

import asyncio
import math
import re
import sys

import pytest
from IPython.utils.capture import capture_output
from kani import Kani

import kanibook
from kanibook.openai_compat import openai_engine
from kanibook.probs.api import LogprobsCollector
from kanibook.probs.record import ReplyProbs
from kanibook.render import probs as render_probs

pytestmark = [pytest.mark.server, pytest.mark.slow]
pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")

from _servers import free_port, running  # noqa: E402  (tests/unit/_servers.py)
from _waits import until  # noqa: E402  (tests/unit/_waits.py)

STORY = "Write a long story about a lighthouse keeper and a storm."


@pytest.fixture(scope="module")
def llama_server(demo_model_dir, tmp_path_factory):
    """llama.cpp's OpenAI-compatible server on a free loopback port; yields the API root."""
    from kanibook.demo_model import demo_gguf_path

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(demo_gguf_path()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"]  # fmt: skip
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running("llama.cpp's server", command, f"http://127.0.0.1:{port}/v1/models", log):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def engine(llama_server, demo_model_dir):
    return openai_engine(llama_server, tokenizer=demo_model_dir, temperature=0)


def test_a_streamed_reply_records_the_servers_logprobs_live(engine, run_async):
    ai = Kani(engine)

    async def streamed():
        stream = ai.chat_round_stream(STORY, max_tokens=24, probabilities=3)
        pieces, live = [], []
        async for piece in stream:
            pieces.append(piece)
            live.append(len(engine.last_probs))
        return pieces, live, await stream.completion()

    pieces, live, completion = run_async(streamed())
    probs = completion.probs
    assert probs.source == "api" and probs.top_k == 3 and "no token ids" in probs.note
    assert 5 < len(probs) <= 24  # (llama.cpp's server sends no usage to count against)
    assert probs.text.strip() == completion.message.text == "".join(pieces).strip()
    assert live == sorted(live) and 0 < live[0] < len(probs)  # the records grew while the text streamed
    for t in probs:
        top = [a.prob for a in t.raw.top]
        assert len(top) == 3 and top == sorted(top, reverse=True) and sum(top) <= 1 + 1e-6
        assert t.rank == 0 and math.isclose(t.prob, top[0])  # temperature 0: the most probable token every time
        assert t.token_id == -1 and math.isnan(t.entropy) and t.sampled is None
    assert kanibook.show_reply(ai).probs is probs
    html = kanibook.show_reply(ai)._repr_mimebundle_()["text/html"]
    assert len(re.findall(r'class="kb-tok ', html)) == len(probs) and "nan" not in html and "id -1" not in html


def test_a_plain_round_records_them_too(engine, run_async):
    ai = Kani(engine)
    run_async(ai.chat_round("What is the capital of France?", max_tokens=8, probabilities=True))
    probs = kanibook.show_reply(ai).probs
    assert 0 < len(probs) <= 8 and probs.top_k == 5
    assert probs.text.strip() == ai.chat_history[-1].text


def test_the_panel_and_chat_magic_show_them_and_branches_refuse_in_one_line(engine, run_async, ip, current):
    async def panel_round():
        panel = kanibook.chat(engine, max_new_tokens=16)
        panel.probabilities = True
        panel.send("Tell me about dragons.")
        await panel.wait()
        return panel

    panel = run_async(panel_round())
    assert panel.status == "ready"
    box = panel.messages[-1].probs_box
    assert box is not None and len(re.findall(r'class="kb-tok ', box.html.value)) == len(box.probs) > 0
    assert box.branch_controls.layout.display != "flex"  # a server's reply cannot be continued token by token
    with pytest.raises(kanibook.KanibookError, match="need a kanibook engine"):
        panel.branch(-1, 0, 1)

    current(engine)
    with capture_output() as captured:
        ip.run_cell_magic("chat", "--probs --max-new-tokens 8", "Hi")
    views = [o.data["text/html"] for o in captured.outputs if "kb-probs" in o.data.get("text/html", "")]
    assert views and "kb-tok" in views[-1]
    assert "not available" not in captured.stdout


def test_a_stop_ends_the_servers_stream_and_keeps_what_was_recorded(engine, run_async):
    async def stopped():
        panel = kanibook.chat(engine, max_new_tokens=400)
        panel.probabilities = True
        panel.send(STORY)
        await until(lambda: len(engine.last_probs or ()) >= 4)
        panel.stop()
        await panel.wait()
        kept = panel.kani.chat_history[-1]
        panel.settings.max_new_tokens.value = 8
        panel.send("Go on.")  # the server is free again at once
        await asyncio.wait_for(panel.wait(), 60)
        return panel, kept

    panel, kept = run_async(stopped())
    assert panel.status == "ready" and len(panel.kani.chat_history) == 4
    assert kept.text and len(kanibook.show_reply(kept).probs) < 400


def test_hostile_token_texts_from_a_server_are_inert():
    class Entry:
        def __init__(self, token, logprob, top=()):
            self.token, self.logprob, self.top_logprobs = token, logprob, list(top)

    class Chunk:
        def __init__(self, entries):
            delta = type("Delta", (), {"content": "".join(e.token for e in entries)})()
            logprobs = type("Logprobs", (), {"content": entries})()
            self.choices = [type("Choice", (), {"index": 0, "delta": delta, "logprobs": logprobs})()]

    hostile = '<img src=x onerror="alert(1)">'
    probs = ReplyProbs(top_k=2, source="api")
    collect = LogprobsCollector(probs)
    collect(Chunk([Entry(hostile, -0.1, [Entry(hostile, -0.1), Entry("</span><script>x</script>", -2.5)])]))
    collect(Chunk([Entry("!", None)]))  # a token the server left without a logprob is not recorded
    assert collect.finish(hostile)
    html = render_probs.reply_html(probs)
    assert len(probs) == 1 and probs[0].best_other.text == "</span><script>x</script>"
    assert "<img" not in html and "<script>x" not in html and "&lt;img" in html
