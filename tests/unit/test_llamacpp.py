"""GGUF run natively by llama.cpp (kani's LlamaCppEngine): streams without blocking the loop, stops, works in the
panel and the session, takes generation arguments in both vocabularies (at load too), and shows its inside like the
transformers road: the prompt view of the ids llama.cpp evaluates, probabilities and scores from its logits. Uses the
embedded model's own Q4_1 GGUF file."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from kani import ChatMessage, Kani

import kanibook
from kanibook.conversation.session import current_session
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


def test_hyperparameters_given_at_load_are_translated_and_unknown_ones_refused(run_async):
    with pytest.raises(KanibookError, match="Unknown generation argument 'num_beams' for llama.cpp") as info:
        kanibook.load(backend="llama.cpp", num_beams=2)  # refused before the file is read
    assert "\n" not in str(info.value)
    engine = kanibook.load(backend="llama.cpp", do_sample=False, max_new_tokens=6, repetition_penalty=1.0)
    try:
        assert engine.hyperparams == {"temperature": 0.0, "max_tokens": 6, "repeat_penalty": 1.0}
        reply = run_async(Kani(engine).chat_round_str("What is the capital of France?"))  # no per-call arguments
        assert reply.strip() and engine.last_stats.completion_tokens <= 6
    finally:
        run_async(engine.close())


def test_the_magic_loads_with_the_llama_cpp_backend(ip, current, demo_engine):
    current(demo_engine)
    with capture_output() as captured:
        ip.run_line_magic("kani", "load --backend llama.cpp")
    engine = current_session().engine
    assert type(engine).__name__ == "KanibookLlamaCppEngine"
    assert "Loaded SmolLM2-135M-Instruct.Q4_1.gguf (KanibookLlamaCppEngine, llama.cpp" in captured.stdout
    with pytest.raises(UsageError, match="--backend belongs to %kani load"):
        ip.run_line_magic("kani", "prompt --backend llama.cpp")


CONVERSATION = [ChatMessage.system("Be brief."), ChatMessage.user("What is the capital of France?"),
                ChatMessage.assistant("Paris."), ChatMessage.user("And the capital of Italy?")]  # fmt: skip


def test_the_prompt_view_shows_the_ids_llama_cpp_evaluates(llama_engine):
    view = kanibook.show_prompt(llama_engine, CONVERSATION)
    evaluated, _, _ = llama_engine._get_generate_args(CONVERSATION)  # what kani's engine hands create_completion
    assert view.token_ids == list(evaluated)
    assert "".join(t.text for t in view.tokens) == view.text == llama_engine.build_prompt(CONVERSATION)
    assert [s.message_index for s in view.segments if s.message_index is not None] == [0, 1, 2, 3]
    own = "".join(t.text for s in view.segments_of(1) for t in view.tokens[s.start : s.end] if not t.is_template)
    assert own == "What is the capital of France?"
    assert view.segments[-1].label == "generation prompt"


def test_compare_prompts_across_the_two_roads(llama_engine, demo_engine):
    cmp = kanibook.compare_prompts(llama_engine, demo_engine, CONVERSATION)
    assert cmp.a.token_ids == list(llama_engine._get_generate_args(CONVERSATION)[0])
    assert cmp.b.token_ids == demo_engine.build_prompt(CONVERSATION)["input_ids"][0].tolist()
    assert cmp.same  # this file's own tokenizer gives the Hugging Face ids for plain ASCII
    odd = [ChatMessage.user("Straße, café, naïve: 日本語のテキスト ✓")]
    other = kanibook.compare_prompts(llama_engine, demo_engine, odd)
    assert other.a.token_ids == list(llama_engine._get_generate_args(odd)[0])
    assert other.same == (other.a.token_ids == other.b.token_ids)  # any difference is shown, token by token
    assert "A: SmolLM2-135M-Instruct.Q4_1.gguf" in other._repr_mimebundle_()["text/plain"]


def _check_records(probs, greedy: bool):
    assert len(probs) > 0
    for t in probs:
        total = sum(a.prob for a in t.alternatives)
        assert 0 < total <= 1 + 1e-5 and len(t.alternatives) == probs.top_k
        assert t.token_id in [a.token_id for a in t.alternatives]  # the chosen token is among them
        assert t.entropy >= 0 and 0 < t.prob <= 1
        if greedy:
            assert t.rank == 0 and t.alternatives[0].token_id == t.token_id


def test_probabilities_from_llama_cpps_logits(llama_engine, run_async):
    completion = run_async(llama_engine.predict(QUESTION, max_new_tokens=12, do_sample=False, probabilities=True))
    probs = completion.probs
    _check_records(probs, greedy=True)
    assert probs.text.strip() == completion.message.text and probs.note is None
    assert probs.prompt_ids == list(llama_engine._get_generate_args(QUESTION)[0])
    assert kanibook.show_reply(completion).probs is probs
    sampled = run_async(llama_engine.predict(QUESTION, max_new_tokens=12, temperature=1.0, top_k=5, seed=3,
                                             probabilities=True))  # fmt: skip
    _check_records(sampled.probs, greedy=False)  # top_k=5: what was sampled is among the raw top 5
    assert "raw distribution" in sampled.probs.note


def test_probabilities_in_chat_magic_and_panel(llama_engine, ip, current, run_async):
    current(llama_engine)
    with capture_output() as captured:
        ip.run_cell_magic("chat", "--probs --max-new-tokens 6 --temperature 0", "Say hello.")
    shown = [o.data for o in captured.outputs if "text/plain" in o.data and "Reply" in o.data["text/plain"]]
    assert shown and "least confident" in shown[-1]["text/plain"]
    assert "not available" not in captured.stdout

    async def panel_round():
        panel = kanibook.chat(llama_engine, max_new_tokens=6)
        panel.probabilities = True
        panel.input.value = "Say hello."
        panel.send_button.click()
        await panel.wait()
        box = panel.messages[-1].probs_box
        panel.close()
        return box

    box = run_async(panel_round())
    assert box is not None and len(box.probs) > 0


def test_score_text_through_llama_cpps_logits(llama_engine, demo_engine):
    scored = kanibook.score_text(llama_engine, CONVERSATION)
    view = kanibook.show_prompt(llama_engine, CONVERSATION)
    assert [t.index for t in scored.tokens] == list(range(1, view.total))
    assert 1 < scored.perplexity < 1000
    reference = kanibook.score_text(demo_engine, CONVERSATION)  # the same ids through transformers
    same_top = sum(a.alternatives[0].token_id == b.alternatives[0].token_id
                   for a, b in zip(scored.tokens, reference.tokens)) / len(scored.tokens)  # fmt: skip
    assert same_top >= 0.8  # the Q4_1 file and its dequantized weights mostly agree
    reply = kanibook.show_prompt(llama_engine, QUESTION)  # the context was reset: generation still works
    assert reply.total > 5


def test_what_if_branches_continue_through_llama_cpp(llama_engine):
    session = kanibook.ChatSession(llama_engine)
    try:
        first = session.send("What is the capital of France?", max_new_tokens=8, temperature=0, probabilities=True)
        old = session.history[-1]
        probs = kanibook.show_reply(session).probs
        branch = session.branch(-1, 0, 1, max_new_tokens=8)
    finally:
        session.close()
    assert branch.alternative.token_id == probs[0].alternatives[1].token_id  # the runner-up at the first token
    assert branch.probs.tokens[0].token_id == branch.alternative.token_id
    assert session.history[-1] is not old and branch.message.text and first.text
    assert all(t.rank == 0 for t in branch.probs.tokens[1:])  # greedy from there on, from llama.cpp's logits


NAMED = [ChatMessage.user("My cat is called Zorblax. Remember that."), ChatMessage.assistant("Sure."),
         ChatMessage.user("The weather today is sunny."), ChatMessage.assistant("Nice."),
         ChatMessage.user("What is my cat called?"), ChatMessage.assistant("Your cat is called Zorblax.")]  # fmt: skip


def test_explain_reply_and_template_what_if_through_llama_cpps_logits(llama_engine, demo_engine):
    """The same explanation on both roads: llama.cpp's ids and logits (the Q4_1 file) against transformers' (its
    dequantized weights)."""
    ours = kanibook.explain_reply(llama_engine, messages=NAMED, progress=False)
    theirs = kanibook.explain_reply(demo_engine, messages=NAMED, progress=False)
    assert ours.reply.view.token_ids == theirs.reply.view.token_ids
    assert [p.label for p in ours.parts] == [p.label for p in theirs.parts]
    drops = {p.label: p.drop for p in ours.parts if p.label != "template"}
    assert max(drops, key=drops.get) == "#1 user" and drops["#1 user"] > 5.0  # the message that gave the name
    assert ours.logprob == pytest.approx(theirs.logprob, abs=0.5 + 0.2 * abs(theirs.logprob))
    assert 'class="kb-why"' in ours._repr_mimebundle_()["text/html"]

    what_if = kanibook.template_what_if(llama_engine, messages=NAMED, greedy_tokens=4, progress=False)
    real, bare = what_if.variant("real prompt"), what_if.variant("no chat template")
    assert real.prefix == ours.reply.prefix and bare.prefix != real.prefix
    assert real.logprob > bare.logprob  # the reply is the template's kind of reply
    assert real.greedy.strip()  # llama.cpp's own greedy continuation
    doubled = what_if.variant("doubled BOS")
    assert doubled.note or doubled.prefix[:2] == [llama_engine.tokenizer.bos_token_id] * 2
    view = kanibook.show_prompt(llama_engine, QUESTION)  # the context was reset: generation still works
    assert view.total > 5


def test_the_logit_lens_on_llama_cpp_says_why_in_one_line(llama_engine):
    with pytest.raises(KanibookError, match="exposes no hidden states") as e:
        kanibook.show_layers(llama_engine, "The capital of France is", progress=False)
    assert "\n" not in str(e.value)
