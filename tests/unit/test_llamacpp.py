"""GGUF run natively by llama.cpp (kani's LlamaCppEngine): streams without blocking the loop, stops, works in the
panel and the session, and says clearly what does not apply. Uses the embedded model's own Q4_1 GGUF file."""

from __future__ import annotations

import pytest
from kani import ChatMessage, Kani

import kanibook
from kanibook.exceptions import KanibookError

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'kanibook[llamacpp]')")

QUESTION = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]


@pytest.fixture(scope="module")
def llama_engine(demo_model_dir):
    engine = kanibook.load(backend="llama.cpp")
    yield engine
    assert not engine.is_generating


def test_the_embedded_gguf_answers_through_kani_with_its_own_template(llama_engine, run_async):
    assert llama_engine.hf_tokenizer.chat_template  # the file's own template, no pipeline passed by hand
    reply = run_async(Kani(llama_engine).chat_round_str("What is the capital of France?", max_new_tokens=12))
    assert reply.strip()
    stats = llama_engine.last_stats
    assert 0 < stats.completion_tokens <= 12 and stats.prompt_tokens > 5 and stats.tokens_per_second


def test_exactly_n_tokens_in_either_vocabulary(llama_engine, run_async):
    async def count(**hp):
        pieces, completion = 0, None
        async for item in llama_engine.stream(QUESTION, **hp):
            if isinstance(item, str):
                pieces += 1
            else:
                completion = item
        return completion.stats.completion_tokens, completion.message.text

    n, text = run_async(count(max_new_tokens=16, min_new_tokens=16, do_sample=False))
    assert n == 16 and text
    # (not compared with the first text: llama.cpp reuses the prompt's cached evaluation, and its logits can then
    # differ in the last bits, enough to turn a near-tie the other way under greedy decoding)
    n, text = run_async(count(max_tokens=16, min_new_tokens=16, temperature=0.0))
    assert n == 16 and text


def test_the_loop_stays_free_and_stop_keeps_the_partial_reply(llama_engine, run_async, ticking):
    async def stream():
        pieces, completion = [], None
        async for item in llama_engine.stream(QUESTION, max_new_tokens=400, min_new_tokens=400):
            if isinstance(item, str):
                pieces.append(item)
                if len(pieces) == 8:
                    llama_engine.stop()
            else:
                completion = item
        return pieces, completion

    ticks, (pieces, completion) = run_async(ticking(stream()))
    stats = completion.stats
    assert stats.stopped and 8 <= stats.completion_tokens <= 10  # within a token or two of the click
    assert completion.message.text == "".join(pieces).strip()
    assert ticks >= stats.completion_tokens  # the loop ran between tokens


def test_the_panel_and_the_session_work_with_it(llama_engine, run_async):
    async def panel_round():
        panel = kanibook.chat(llama_engine, max_new_tokens=8)
        panel.input.value = "Say hello."
        panel.send_button.click()
        await panel.wait()
        texts = [m.message.text for m in panel.messages]
        panel.close()
        return texts

    texts = run_async(panel_round())
    assert texts[0] == "Say hello." and texts[-1].strip()
    session = kanibook.ChatSession(llama_engine)
    try:
        result = session.send("Say a word.", **session.generation_kwargs(max_new_tokens=6, temperature=0))
    finally:
        session.close()
    assert result.text and result.stats.completion_tokens <= 6


def test_memory_view_shows_the_process_and_says_what_does_not_apply(llama_engine):
    report = kanibook.memory(llama_engine)
    assert report.process.rss > 0 and report.weights is None
    assert "llama.cpp" in str(report)


def test_bad_backend_arguments_get_one_line():
    with pytest.raises(KanibookError, match="Unknown backend 'vllm'"):
        kanibook.load(backend="vllm")
    with pytest.raises(KanibookError, match="quant= does not apply"):
        kanibook.load(backend="llama.cpp", quant="nf4")


def test_the_prompt_view_says_it_does_not_apply(llama_engine):
    with pytest.raises(KanibookError, match="Hugging Face") as info:
        kanibook.show_prompt(llama_engine, QUESTION)
    assert "\n" not in str(info.value)
