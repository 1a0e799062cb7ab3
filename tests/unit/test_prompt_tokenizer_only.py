"""show_prompt / compare_prompts / %kani prompt --model on a model id or folder: the tokenizer and chat template only,
no weights loaded, in seconds; an unknown model fails with one line."""

from __future__ import annotations

import time

import pytest
from kani import ChatMessage

import kanibook
from kanibook.exceptions import KanibookError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MESSAGES = [ChatMessage.system("Be brief."), ChatMessage.user("What is the capital of France?")]


@pytest.fixture
def model_loads(monkeypatch):
    """Counts every model load (AutoModel*.from_pretrained and PreTrainedModel.from_pretrained, whatever the class)."""
    import transformers
    from transformers import PreTrainedModel

    calls = []
    original = PreTrainedModel.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        calls.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted))
    for name in ("AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText"):
        auto = getattr(transformers, name)
        auto_original = auto.from_pretrained.__func__

        def auto_counted(cls, *args, _orig=auto_original, **kwargs):
            calls.append(cls.__name__)
            return _orig(cls, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(auto_counted))
    return calls


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_tokenizer_only_view_loads_no_weights(tmp_path, chat_model_builder, model_loads):
    small = chat_model_builder(tmp_path / "small", SPECIALS, CHATML, "<|endoftext|>", "<|endoftext|>")
    kanibook.show_prompt(small, MESSAGES)  # the first call imports kani's model-specific pipelines (once a process)
    heavy = chat_model_builder(tmp_path / "heavy", SPECIALS, CHATML, "<|endoftext|>", "<|endoftext|>",
                               hidden_size=512, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=8,
                               num_key_value_heads=8, max_position_embeddings=4096)  # fmt: skip
    weights = sum(f.stat().st_size for f in heavy.glob("*.safetensors"))
    assert weights > 100e6
    before = _rss()
    start = time.perf_counter()
    view = kanibook.show_prompt(heavy, MESSAGES)
    view._repr_mimebundle_()
    elapsed = time.perf_counter() - start
    grown = _rss() - before
    assert model_loads == []
    assert elapsed < 3.0
    assert grown < weights / 4, (grown, weights)
    assert view.context_size == 4096  # from config.json
    assert "(tokenizer only)" in view.title
    assert "".join(t.text for t in view.tokens if view.segments[t.segment].message_index == 1 and not t.is_template) == (
        "What is the capital of France?"
    )


def test_tokenizer_only_ids_equal_the_loaded_engines(tiny_llama2_dir, model_loads):
    msgs = [ChatMessage.user("Hello world!"), ChatMessage.assistant("How are you?"), ChatMessage.user("Thanks")]
    view = kanibook.show_prompt(str(tiny_llama2_dir), msgs)
    assert model_loads == []
    engine = kanibook.load(tiny_llama2_dir)
    assert view.token_ids == engine.build_prompt(msgs)["input_ids"][0].tolist()
    assert view.total == kanibook.show_prompt(engine, msgs).total


def test_unknown_model_fails_with_one_line(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for target in ("no-such-org/no-such-model-kb", str(tmp_path / "missing" / "folder")):
        with pytest.raises(KanibookError) as info:
            kanibook.show_prompt(target, MESSAGES)
        assert "\n" not in str(info.value) and ("no-such-model-kb" in str(info.value) or "missing" in str(info.value))
    with pytest.raises(KanibookError):
        kanibook.compare_prompts("no-such-org/no-such-model-kb", "no-such-org/other", MESSAGES)


def test_kani_prompt_magic_with_model(ip, session, demo_model_dir, model_loads):
    from IPython.core.error import UsageError

    ip.run_line_magic("kani", 'system "Be brief."')
    view = ip.run_line_magic("kani", f"prompt --model {demo_model_dir}")
    assert model_loads == []
    assert "(tokenizer only)" in view.title
    assert [m.text for m in view.messages] == ["Be brief."]
    assert view.token_ids == session.engine.build_prompt(view.messages)["input_ids"][0].tolist()
    with pytest.raises(UsageError, match="--model belongs to %kani prompt"):
        ip.run_line_magic("kani", f"history --model {demo_model_dir}")
    with pytest.raises(UsageError, match="No model|not in the local"):
        ip.run_line_magic("kani", f"prompt --model {demo_model_dir}/nope/nope")
