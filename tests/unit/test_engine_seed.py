"""Everything kani's HuggingEngine page (shared/seed/huggingengine.rst) describes, through kanibook.load()."""

from __future__ import annotations

import gc

import pytest
from kani import ChatMessage, ChatRole, Kani
from kani.engines.huggingface import ChatTemplatePromptPipeline, HuggingEngine
from kani.prompts import PromptPipeline

import kanibook
from kanibook.engine import KanibookEngine
from kanibook.exceptions import KanibookError

QUESTION = [ChatMessage.user("What is the capital of France?")]


def _prompt_ids(engine, messages):
    return engine.build_prompt(messages)["input_ids"][0].tolist()


def _reply_ids(engine, messages, run_async, **hp):
    """Generate through the engine; return the streamed completion's token count and text."""

    async def go():
        return await engine.predict(messages, **hp)

    return run_async(go())


def test_load_returns_a_kani_hugging_engine_with_the_chat_template(demo_engine):
    assert isinstance(demo_engine, HuggingEngine) and isinstance(demo_engine, KanibookEngine)
    assert isinstance(demo_engine.pipeline, ChatTemplatePromptPipeline)
    expected = demo_engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION[0].text}], add_generation_prompt=True, tokenize=True
    )
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert _prompt_ids(demo_engine, QUESTION) == list(expected)
    assert demo_engine.max_context_size == demo_engine.model.config.max_position_embeddings


def test_a_custom_prompt_pipeline_is_what_the_model_receives(demo_model_dir, run_async):
    pipe = (
        PromptPipeline()
        .wrap(role=ChatRole.USER, prefix="<|im_start|>user\n", suffix="<|im_end|>\n")
        .wrap(role=ChatRole.ASSISTANT, prefix="<|im_start|>assistant\n", suffix="<|im_end|>\n")
        .conversation_fmt(generation_suffix="<|im_start|>assistant\n")
    )
    engine = kanibook.load(demo_model_dir, prompt_pipeline=pipe)
    assert engine.pipeline is pipe
    text = pipe(QUESTION)
    assert text.startswith("<|im_start|>user\nWhat is the capital")  # no default system message: ours, not the template's
    assert _prompt_ids(engine, QUESTION) == engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    completion = _reply_ids(engine, QUESTION, run_async, max_new_tokens=8, do_sample=False)
    assert completion.prompt_tokens == len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    del engine
    gc.collect()


def test_a_subclass_overriding_build_prompt_is_used(demo_model_dir, run_async):
    class PlainEngine(KanibookEngine):
        def build_prompt(self, messages, functions=None):
            return "".join(f"{m.role.value}: {m.text}\n" for m in messages) + "assistant:"

    engine = PlainEngine(demo_model_dir)
    expected = engine.tokenizer("user: What is the capital of France?\nassistant:", add_special_tokens=False)
    completion = _reply_ids(engine, QUESTION, run_async, max_new_tokens=4, do_sample=False)
    assert completion.prompt_tokens == len(expected["input_ids"])
    assert completion.stats.prompt_tokens == completion.prompt_tokens
    del engine
    gc.collect()


def test_model_cls_and_tokenizer_cls_overrides(demo_model_dir):
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    engine = kanibook.load(demo_model_dir, model_cls=LlamaForCausalLM, tokenizer_cls=PreTrainedTokenizerFast)
    assert type(engine.model) is LlamaForCausalLM
    assert type(engine.tokenizer) is PreTrainedTokenizerFast
    del engine
    gc.collect()


def test_an_eos_token_id_list_ends_the_reply_at_any_of_them(demo_engine, demo_model_dir, run_async):
    """With the first token of the normal reply declared an end token, the reply is empty; with the Nth, N-1 long."""
    hp = {"max_new_tokens": 12, "do_sample": False}
    reference = _reply_ids(demo_engine, QUESTION, run_async, **hp)
    ids = demo_engine.tokenizer(reference.message.text, add_special_tokens=False)["input_ids"]
    assert len(ids) >= 4
    stop_id = ids[3]
    engine = kanibook.load(demo_model_dir, eos_token_id=[demo_engine.tokenizer.eos_token_id, stop_id])
    completion = _reply_ids(engine, QUESTION, run_async, **hp)
    assert completion.completion_tokens == ids.index(stop_id)
    assert completion.message.text == demo_engine.tokenizer.decode(ids[: ids.index(stop_id)]).strip()
    del engine
    gc.collect()


def test_max_context_size_is_respected_by_kani(demo_model_dir, run_async):
    engine = kanibook.load(demo_model_dir, max_context_size=96)
    assert engine.max_context_size == 96
    history = [ChatMessage.user(f"Message number {i} with some padding words.") for i in range(12)]
    ai = Kani(engine, chat_history=history, desired_response_tokens=16)

    async def prompt():
        return await ai.get_prompt()

    kept = run_async(prompt())
    assert 0 < len(kept) < len(history)  # older messages dropped to fit
    assert run_async(engine.prompt_len(kept)) <= 96 - 16


def test_generation_hyperparameters_pass_through(demo_model_dir, run_async):
    engine = kanibook.load(demo_model_dir, max_new_tokens=3, do_sample=False)
    assert engine.hyperparams == {"max_new_tokens": 3, "do_sample": False}
    completion = _reply_ids(engine, QUESTION, run_async)
    assert completion.completion_tokens <= 3
    del engine
    gc.collect()


def test_device_argument(demo_engine, demo_model_dir):
    engine = kanibook.load(demo_model_dir, device="cpu")
    assert engine.device == "cpu" and engine.model.device.type == "cpu"
    del engine
    gc.collect()


@pytest.mark.slow
def test_bitsandbytes_4bit_through_model_load_kwargs_on_cpu(demo_model_dir, run_async):
    from transformers import BitsAndBytesConfig

    engine = kanibook.load(
        demo_model_dir, model_load_kwargs={"quantization_config": BitsAndBytesConfig(load_in_4bit=True)}
    )
    kinds = {type(m).__name__ for m in engine.model.modules()}
    assert "Linear4bit" in kinds
    completion = _reply_ids(engine, QUESTION, run_async, max_new_tokens=6, do_sample=False)
    assert completion.completion_tokens > 0 and completion.message.text
    del engine
    gc.collect()


@pytest.mark.slow
def test_quant_preset_nf4_double_quant(demo_model_dir):
    engine = kanibook.load(demo_model_dir, quant="nf4-dq", quant_compute_dtype="float32")
    config = engine.model.config.quantization_config
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert "Linear4bit" in {type(m).__name__ for m in engine.model.modules()}
    del engine
    gc.collect()


def test_quant_errors_are_one_clear_line(demo_model_dir):
    with pytest.raises(KanibookError, match="Unknown quant preset 'nf3'.*use one of"):
        kanibook.load(demo_model_dir, quant="nf3")
    with pytest.raises(KanibookError, match="not both"):
        kanibook.load(demo_model_dir, quant="nf4", model_load_kwargs={"quantization_config": object()})


def test_audio_sample_rate_alias_does_not_leak_into_generation(demo_model_dir):
    engine = kanibook.load(demo_model_dir, audio_sample_rate=16000)
    assert engine.mm_audio_sample_rate == 16000
    assert "audio_sample_rate" not in engine.hyperparams and "audio_sr" not in engine.hyperparams
    del engine
    engine = kanibook.load(demo_model_dir, audio_sr=22050)  # the spelling in kani's own example
    assert engine.mm_audio_sample_rate == 22050 and "audio_sr" not in engine.hyperparams
    del engine
    gc.collect()
    with pytest.raises(KanibookError, match="Conflicting audio sample rates"):
        kanibook.load(demo_model_dir, audio_sample_rate=16000, mm_audio_sample_rate=8000)
