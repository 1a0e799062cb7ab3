"""The one scoring path: teacher-forced per-token scores agree with a direct forward pass of the model."""

from __future__ import annotations

import math
import threading

import pytest

from kanibook.scoring import score_ids

TEXT = "The cat sat on the mat because it was warm, and the sun was shining through the window."


@pytest.fixture(scope="module")
def ids(demo_engine):
    return demo_engine.tokenizer(TEXT)["input_ids"]


@pytest.fixture(scope="module")
def fp32_engine(demo_model_dir):
    """The demo model in fp32 (the default is bf16 on a CPU with native bf16, where two forward passes on different
    threads round differently): these tests check the arithmetic of the scoring path, to fp32's precision."""
    import kanibook

    return kanibook.load(demo_model_dir, quant="fp32")


def test_scores_equal_a_direct_log_softmax(fp32_engine, ids):
    demo_engine = fp32_engine
    import torch

    scores = score_ids(demo_engine.model, ids, top_k=5, keep_full=True)
    with torch.no_grad():
        direct = torch.log_softmax(demo_engine.model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    assert len(scores) == len(ids) - 1
    assert torch.allclose(scores.full_logprobs, direct, atol=1e-4)
    for j, token in enumerate(ids[1:]):
        assert scores.logprob[j] == pytest.approx(direct[j, token].item(), abs=1e-4)
        assert scores.rank[j] == int((direct[j] > direct[j, token]).sum())
        assert scores.top_ids[j][0] == int(direct[j].argmax())
        assert scores.top_logprobs[j] == sorted(scores.top_logprobs[j], reverse=True)
        assert 0 <= scores.entropy[j] <= math.log(direct.shape[-1]) + 1e-4


def test_perplexity_matches_the_models_own_loss(fp32_engine, ids):
    import torch

    demo_engine = fp32_engine
    with torch.no_grad():
        loss = demo_engine.model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert score_ids(demo_engine.model, ids).perplexity == pytest.approx(math.exp(loss), rel=1e-4)


def test_scoring_runs_on_the_model_thread(demo_engine, ids, monkeypatch):
    import kanibook.scoring as scoring

    seen = []
    original = scoring._score
    monkeypatch.setattr(scoring, "_score", lambda *a: (seen.append(threading.current_thread().name), original(*a))[1])
    score_ids(demo_engine.model, ids[:8])
    assert seen == ["kanibook-model"]


def test_a_single_token_has_nothing_to_score(demo_engine, ids):
    scores = score_ids(demo_engine.model, ids[:1])
    assert len(scores) == 0 and math.isnan(scores.perplexity)
