"""The chat panel's "probabilities" box and "what if" controls, driven with real widgets and the demo model."""

from __future__ import annotations

import re

from kani import ChatMessage
from kani.engines.base import BaseEngine, Completion

import kanibook
from kanibook.conversation import transcript

from _waits import until  # tests/unit/_waits.py


def test_toggle_shows_coloured_tokens_live_then_branches(demo_engine, run_async, no_leaked_threads):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=24, hyperparams={"min_new_tokens": 16})
        panel.probs_toggle.value = True
        panel.send("Tell me about dragons.")
        await until(lambda: len(panel.messages) == 2 and panel.messages[-1].probs_box is not None)
        view = panel.messages[-1]
        live = []
        view.probs_box.html.observe(lambda c: live.append((panel.busy, c["new"])), "value")
        await panel.wait()
        original = panel.kani.chat_history[-1]
        box = view.probs_box
        # the "what if" controls: pick a token and an alternative, click
        token = box.probs.tokens[2]
        box.token.value = token.index
        alt_index = box.alternative.value
        box.what_if.click()
        assert panel.busy
        await panel.wait()
        return panel, view, live, original, token, alt_index

    panel, view, live, original, token, alt_index = run_async(scenario())
    streamed = [html for busy, html in live if busy and "least confident" not in html]
    assert streamed, "no coloured tokens while the reply streamed"
    counts = [len(re.findall(r'class="kb-tok ', html)) for html in streamed]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # tokens arrive live, at the throttled rate
    assert all("kb-p" in html and "probability of the chosen token" in html for html in streamed)
    final = live[-1][1]
    assert "least confident" in final and "title=" in final
    # the branch replaced the reply; the original stays in its extra
    history = panel.kani.chat_history
    new = history[-1]
    assert new is not original and [m.role.value for m in history] == ["user", "assistant"]
    new_probs = panel.messages[-1].probs_box.probs
    assert new_probs.token_ids[:2] == [t.token_id for t in view.probs_box.probs.tokens[:2]]
    assert new_probs.token_ids[2] == token.raw.top[alt_index].token_id
    assert transcript.branches_of(new)[0]["original"] == original.text
    assert panel.status.startswith("branched at token #2")


def test_python_branch_refuses_clearly(demo_engine, run_async):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=6)
        panel.send("Hi")
        await panel.wait()
        errors = []
        for args in ((-1, 0, 1), (0, 0, 1)):
            try:
                panel.branch(*args)
            except kanibook.KanibookError as e:
                errors.append(str(e))
        return errors

    errors = run_async(scenario())
    assert "without probabilities" in errors[0]
    assert "not a reply" in errors[1]


class PlainApiEngine(BaseEngine):
    """A real kani engine without per-token probabilities (like an API server that returns no logprobs)."""

    max_context_size = 1024

    def prompt_len(self, messages, functions=None, **kwargs) -> int:
        return 3

    async def predict(self, messages, functions=None, **hyperparams):
        assert "probabilities" not in hyperparams
        return Completion(ChatMessage.assistant("plain reply"))


def test_engine_without_probabilities_says_so(run_async):
    async def scenario():
        panel = kanibook.chat(PlainApiEngine())
        panel.probabilities = True
        panel.send("Hi")
        await panel.wait()
        return panel

    panel = run_async(scenario())
    assert panel.status == "ready · probabilities: not available for this engine"
    assert panel.kani.chat_history[-1].text == "plain reply"
    assert panel.messages[-1].probs_box is None


def test_chat_magic_probs_on_an_engine_without_them_says_so(ip, current):
    from IPython.utils.capture import capture_output

    session = current(PlainApiEngine())
    with capture_output() as captured:
        ip.run_cell_magic("chat", "--probs", "Hi")
    assert captured.stdout.strip().splitlines()[-1] == "probabilities: not available for this engine"
    assert session.history[-1].text == "plain reply"


def test_openai_engine_asks_for_logprobs_until_a_server_ignores_them():
    """kanibook's OpenAI-compatible engine claims probabilities until a server answers without logprobs (servers
    that send them: test_openai_logprobs.py; one that does not: test_openai_server.py)."""
    from kanibook.openai_compat import openai_engine

    engine = openai_engine("http://127.0.0.1:9/v1", "m", max_context_size=512)  # no request is made
    assert engine.supports_probabilities is True
