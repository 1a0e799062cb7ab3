"""Per-token probabilities with the real demo model: recording, the views, score_text, "what if" branches, export."""

from __future__ import annotations

import json
import math

import pytest
from kani import ChatMessage

import kanibook
from kanibook.exceptions import KanibookError
from kanibook.probs.record import Alternative, Distribution, ReplyProbs, TokenProb
from kanibook.render.probs import CSS

MESSAGES = [ChatMessage.user("Tell me about dragons.")]
TAGS = {"div", "span", "b", "kbd", "style", "table", "caption", "tr", "th", "td"}


def _complete(engine, run_async, **hp):
    async def go():
        items = [x async for x in engine.stream(MESSAGES, **hp)]
        return items[:-1], items[-1]

    return run_async(go())


def _forward_logprobs(engine, ids):
    """log-softmax of one direct forward pass (the reference), run on the model thread."""
    import torch

    from kanibook.engine._model_thread import model_thread

    def fwd():
        with torch.inference_mode():
            logits = engine.model(input_ids=torch.tensor([ids], device=engine.model.device)).logits[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    return model_thread().run(fwd)


def _check_distribution(dist: Distribution):
    probs = [a.prob for a in dist.top]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-5
    assert 0 <= dist.prob <= 1 and dist.entropy >= 0


@pytest.fixture(scope="module")
def fp32_engine(demo_model_dir):
    """The demo model in fp32: a recorded probability equals one forward pass's to fp32's rounding (in bf16, the
    default on a CPU with native bf16, the cached step-by-step decode and one forward pass round differently)."""
    return kanibook.load(demo_model_dir, quant="fp32")


def test_greedy_records_match_the_generated_tokens(fp32_engine, run_async, no_leaked_threads):
    demo_engine = fp32_engine
    pieces, completion = _complete(demo_engine, run_async, max_new_tokens=24, do_sample=False, probabilities=True)
    probs = completion.probs
    assert len(probs) == completion.completion_tokens > 5
    assert probs.text.strip() == completion.message.text == "".join(pieces).strip()
    ids = probs.prompt_ids + probs.token_ids
    reference = _forward_logprobs(demo_engine, ids)
    n = len(probs.prompt_ids)
    for t in probs:
        assert t.alternatives[0].token_id == t.token_id and t.rank == 0  # greedy: the top-1 is the token generated
        assert t.sampled is None  # greedy decoding: the sampled distribution is the raw one
        _check_distribution(t.raw)
        expected = reference[n + t.index - 1, t.token_id].exp().item()
        assert t.prob == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert kanibook.show_reply(completion).probs is probs


def test_sampling_records_a_different_distribution(demo_engine, run_async, no_leaked_threads):
    import torch

    torch.manual_seed(0)
    _, completion = _complete(
        demo_engine, run_async, max_new_tokens=12, do_sample=True, temperature=0.5, probabilities=3
    )
    probs = completion.probs
    assert probs.top_k == 3 and all(len(t.raw.top) == 3 for t in probs)
    assert all(t.sampled is not None for t in probs)
    for t in probs:
        _check_distribution(t.sampled)
        assert t.sampled.prob >= 0 and t.raw.prob > 0
    # temperature 0.5 sharpens: the raw top-1 gets more mass, the entropy falls
    first = probs[0]
    assert first.sampled.top[0].prob > first.raw.top[0].prob
    assert first.sampled.entropy < first.raw.entropy


def test_records_arrive_live_with_the_text(demo_engine, run_async, no_leaked_threads):
    async def go():
        seen = []
        async for piece in demo_engine.stream(MESSAGES, max_new_tokens=16, do_sample=False, probabilities=True):
            if isinstance(piece, str):
                live = demo_engine.last_probs
                seen.append((len(live), live.text, demo_engine.last_text))
        return seen

    seen = run_async(go())
    counts = [n for n, _, _ in seen]
    assert counts == sorted(counts) and counts[0] >= 1 and counts[0] < counts[-1]
    for _, recorded, text in seen:
        assert text.startswith(recorded) or recorded.startswith(text)


def test_off_by_default(demo_engine, run_async):
    _, completion = _complete(demo_engine, run_async, max_new_tokens=4, do_sample=False)
    assert completion.probs is None and demo_engine.last_probs is None
    with pytest.raises(KanibookError, match="without probabilities"):
        kanibook.show_reply(completion.message)
    with pytest.raises(KanibookError, match="probabilities="):
        _complete(demo_engine, run_async, max_new_tokens=2, probabilities="yes")


def test_score_text_equals_one_forward_pass(demo_engine):
    messages = [ChatMessage.user("What is two plus two?"), ChatMessage.assistant("Two plus two is four.")]
    view = kanibook.score_text(demo_engine, messages)
    ids = [view.scores.token_ids[0]] + [t.token_id for t in view.tokens]
    reference = _forward_logprobs(demo_engine, ids)
    assert len(view.tokens) == len(ids) - 1
    for j, t in enumerate(view.tokens):
        assert t.index == j + 1
        assert math.log(t.prob) == pytest.approx(reference[j, ids[j + 1]].item(), abs=1e-4)
        assert [a.token_id for a in t.alternatives] == reference[j].topk(5).indices.tolist()
    assert {seg.role for seg in view.segments} >= {"user", "assistant"}
    bundle = view._repr_mimebundle_()
    assert "perplexity" in bundle["text/plain"] and "kb-tok" in bundle["text/html"]


def test_score_text_separates_the_messages_own_tokens_from_the_templates(demo_engine):
    """The demo template adds a default system prompt and markers: the lesson is about the messages' own text, so
    its perplexity and least-confident list are over those tokens (the template's are still shown and scored)."""
    messages = [ChatMessage.user("What is two plus two?"), ChatMessage.assistant("Two plus two is four.")]
    view = kanibook.score_text(demo_engine, messages)
    prompt = kanibook.show_prompt(demo_engine, messages)
    template = {t.position for t in prompt.tokens if t.is_template}
    own = view.own_tokens
    assert own and template and not {t.index for t in own} & template
    assert "".join(t.text for t in own).replace(" ", "") == "Whatistwoplustwo?Twoplustwoisfour."
    expected = math.exp(-sum(math.log(t.prob) for t in own) / len(own))
    assert view.own_perplexity == pytest.approx(expected) and view.own_perplexity != pytest.approx(view.perplexity)
    assert all(t.index not in template for t in view._least())
    assert f"own {len(own)} tokens: {view.own_perplexity:.2f}" in view._repr_mimebundle_()["text/plain"]


def test_branch_continues_from_the_chosen_alternative(demo_engine, session):
    result = session.send("Tell me about dragons.", max_new_tokens=20, do_sample=False, probabilities=True)
    original = kanibook.show_reply(session).probs
    at = 3
    branch = session.branch(-1, at, 1)
    new = branch.probs
    assert branch.alternative == original[at].alternatives[1]
    assert new.token_ids[:at] == original.token_ids[:at]  # the reply up to the branch point is unchanged
    assert new.token_ids[at] == original[at].alternatives[1].token_id  # then the chosen alternative
    assert new.token_ids != original.token_ids
    # the continuation is the model's greedy choice after the alternative
    reference = _forward_logprobs(demo_engine, new.prompt_ids + new.token_ids[: at + 1])
    assert new.token_ids[at + 1] == int(reference[-1].argmax())
    history = session.history
    assert history[-1] is branch.message and history[-1].text.startswith(demo_engine.tokenizer.decode(new.token_ids[:at]))
    assert kanibook.show_reply(session).probs is new
    # the original reply is kept and exported
    from kanibook.conversation import transcript

    assert transcript.branches_of(history[-1])[0]["original"] == result.text
    saved = json.loads(transcript.to_json(session.kani))
    assert result.text in json.dumps(saved)
    assert "branched" in transcript.to_markdown(session.kani)
    with pytest.raises(KanibookError, match="alternatives"):
        session.branch(-1, 0, 99)
    with pytest.raises(KanibookError, match="not a reply"):
        session.branch(0, 0, 1)


def _hostile_probs(hostile: str) -> ReplyProbs:
    alts = (Alternative(1, hostile, 0.5), Alternative(2, hostile + "\n", 0.2))
    tokens = [
        TokenProb(i, 1, hostile, Distribution(p, 1, 0.7, alts), Distribution(p, 0, 0.1, alts) if i else None)
        for i, p in enumerate([0.95, 0.5, 0.05])
    ]
    return ReplyProbs(tokens, note=hostile)


def test_hostile_token_texts_are_inert(hostile, html_audit):
    probs = _hostile_probs(hostile)
    view = kanibook.show_reply(probs, title=hostile)
    bundle = view._repr_mimebundle_()
    assert html_audit(bundle["text/html"], tags=TAGS, css=CSS) == []
    assert html_audit(view.html(streaming=True), tags=TAGS, css=CSS) == []
    assert "\x00" not in bundle["text/plain"] and "\u202e" not in bundle["text/plain"]


def test_colour_bins_and_legend():
    from kanibook.render import safe
    from kanibook.render.probs import BINS, bin_of, legend

    assert [bin_of(p) for p in (1.0, 0.9, 0.7, 0.4, 0.2, 0.01)] == [0, 0, 1, 2, 3, 4]

    def luminance(hex_colour: str) -> float:
        r, g, b = (int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    lums = [luminance(bg) for _, bg, _, _ in BINS]
    assert lums == sorted(lums, reverse=True)  # reads in grey: lighter means surer
    html = legend()
    assert all(safe.text(label) in html for *_, label in BINS)


def test_chat_magic_probs_shows_the_coloured_reply(ip, session):
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        ip.run_cell_magic("chat", "--probs --max-new-tokens 8 --temperature 0", "Tell me about dragons.")
    html = [o.data.get("text/html", "") for o in captured.outputs]
    assert any("kb-tok" in h and "probability of the chosen token" in h for h in html)
    # shown once: one output area, streamed into, whose last state is the coloured reply with the turn's figures
    assert [bool(getattr(o, "update", False)) for o in captured.outputs][0] is False
    assert sum(not getattr(o, "update", False) for o in captured.outputs) == 1, [h[:80] for h in html]
    assert "kb-tok" in html[-1] and "kb-figures" in html[-1] and "tokens/s" in html[-1]
    assert "kb-chat-output" not in html[-1]  # the Markdown reply is gone, not shown above the coloured one
    probs = kanibook.show_reply(session).probs

    assert len(probs) == 8 and probs.text.strip() == session.history[-1].text


def test_accelerator_path_agrees_with_the_cpu_path():
    """The torch reduction (used for GPU tensors) and the numpy one (CPU) give the same figures."""
    import torch

    from kanibook.probs.record import _stats_numpy, _stats_torch

    torch.manual_seed(0)
    logits = torch.randn(1000) * 4
    masked = logits / 0.5
    masked[:600] = float("-inf")  # what top-k / top-p leave
    for v, token in ((logits, 3), (masked, 700), (masked, 5)):
        a, b = _stats_numpy(v.numpy(), token, 5), _stats_torch(v, token, 5)
        assert a[0] == pytest.approx(b[0], abs=1e-6) and a[1] == b[1] and a[2] == pytest.approx(b[2], rel=1e-4)
        assert a[3] == b[3] and a[4] == pytest.approx(b[4], rel=1e-4)


def test_beam_search_is_refused_with_probabilities(demo_engine, run_async):
    with pytest.raises(KanibookError, match="num_beams"):
        _complete(demo_engine, run_async, max_new_tokens=2, num_beams=2, probabilities=True)
    assert not demo_engine.is_generating
