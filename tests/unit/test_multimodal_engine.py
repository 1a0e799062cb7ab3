"""Images and audio through the kanibook engine, on tiny random-weight models built offline.

What is checked is mechanics, never answers: the processor receives the media (pixel values / audio features reach
``generate``), different images change the next-token logits, Gemma 3's token type ids reach the model so the first
step's logits equal a direct call, and the seed page's Qwen3-Omni call shape works on a class taking the same
arguments.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from kani import ChatMessage  # noqa: E402
from PIL import Image  # noqa: E402

import kanibook  # noqa: E402
from kanibook.engine._model_thread import model_thread  # noqa: E402
from kanibook.media import user_message, user_parts  # noqa: E402

from _media_checks import Recorder  # noqa: E402  (tests/unit/_media_checks.py)


@pytest.fixture(scope="module")
def gemma3_engine(tiny_gemma3_dir):
    return kanibook.load(tiny_gemma3_dir)


@pytest.fixture(scope="module")
def audio_engine(tiny_qwen2_audio_dir):
    """Loaded exactly as the seed page loads Qwen3-Omni: model and processor classes, eos ids, context, audio_sr."""
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    im_end = Qwen2AudioProcessor.from_pretrained(tiny_qwen2_audio_dir).tokenizer.convert_tokens_to_ids("<|im_end|>")
    return kanibook.load(
        tiny_qwen2_audio_dir,
        max_context_size=512,
        audio_sr=16000,
        model_cls=Qwen2AudioForConditionalGeneration,
        tokenizer_cls=Qwen2AudioProcessor,
        eos_token_id=[im_end],
    )


def tone(freq: float, seconds: float = 0.5, rate: int = 16000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t), rate


def next_token_logits(engine, messages):
    import torch

    inputs = engine.build_prompt(messages)

    def forward():
        with torch.no_grad():
            return engine.model(**inputs).logits[0, -1].float().clone()

    return model_thread().run(forward)


def test_image_reaches_generate_through_a_session(llava_engine):
    session = kanibook.ChatSession(llava_engine)
    try:
        with Recorder(llava_engine.model) as rec:
            result = session.send("Describe this image", media=Image.new("RGB", (28, 28), "red"), max_new_tokens=3)
        assert result.error is None
        assert len(rec.calls) == 1 and tuple(rec.calls[0]["pixel_values"].shape) == (1, 3, 28, 28)
        ids = rec.calls[0]["input_ids"][0].tolist()
        image_id = llava_engine._processor_or_tokenizer.image_token_id
        assert ids.count(image_id) == 16  # the processor expanded the placeholder: (28 / 7) ** 2 patches
        sent = session.history[0]
        assert type(sent.parts[1]).__name__ == "ImagePart" and sent.parts[0] == "Describe this image"
    finally:
        session.close()


def test_two_images_change_the_next_token_logits(llava_engine):
    def ask(colour):
        return next_token_logits(llava_engine, [user_message("What colour?", Image.new("RGB", (28, 28), colour))])

    red, blue, red_again = ask("red"), ask("blue"), ask("red")
    assert (red - blue).abs().max().item() > 1e-4
    assert (red - red_again).abs().max().item() == 0.0  # the difference is the image, not noise


def test_gemma3_token_type_ids_reach_generate_and_match_a_direct_call(gemma3_engine, run_async):
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    image = Image.new("RGB", (28, 28), "green")
    messages = [user_message("Describe this image", image)]
    processor = gemma3_engine._processor_or_tokenizer
    direct_inputs = processor(text=gemma3_engine.pipeline(messages), images=[image], return_tensors="pt")
    assert "token_type_ids" in direct_inputs and direct_inputs["token_type_ids"].sum().item() == 4

    def direct(**drop):
        inputs = {k: v for k, v in direct_inputs.items() if k not in drop}
        with torch.no_grad():
            return gemma3_engine.model(**inputs).logits[0, -1].float().clone()

    expected = model_thread().run(direct)
    without = model_thread().run(lambda: direct(token_type_ids=True))
    assert (expected - without).abs().max().item() > 1e-5  # the ids matter for this model

    first_step = []

    class Capture(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if not first_step:
                first_step.append(scores[0].float().clone())
            return scores

    with Recorder(gemma3_engine.model) as rec:
        run_async(gemma3_engine.predict(messages, max_new_tokens=2, do_sample=False,
                                        logits_processor=LogitsProcessorList([Capture()])))  # fmt: skip
    sent = rec.calls[0]
    assert torch.equal(sent["token_type_ids"], direct_inputs["token_type_ids"])
    assert torch.equal(sent["input_ids"], direct_inputs["input_ids"])
    assert torch.allclose(first_step[0], expected, atol=1e-5)
    assert not torch.allclose(first_step[0], without, atol=1e-5)


def test_type_ids_are_dropped_for_a_model_that_does_not_take_them(llava_engine):
    built = llava_engine.build_prompt([user_message("Hi", Image.new("RGB", (28, 28)))])
    assert "token_type_ids" not in built and "mm_token_type_ids" not in built
    assert "pixel_values" in built


def test_audio_through_the_seed_call_shape(audio_engine, tmp_path):
    """The Qwen3-Omni call of the seed page (model_cls, tokenizer_cls, eos_token_id, max_context_size, audio_sr)."""
    import wave

    assert audio_engine.mm_audio_sample_rate == 16000 and audio_engine.max_context_size == 512
    samples, rate = tone(440, seconds=0.5, rate=8000)  # resampled to the model's 16 kHz by kani
    path = tmp_path / "a4.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    session = kanibook.ChatSession(audio_engine)
    try:
        with Recorder(audio_engine.model) as rec:
            result = session.send("What do you hear?", media=[str(path)], max_new_tokens=3)
        assert result.error is None
        sent = rec.calls[0]
        assert tuple(sent["input_features"].shape) == (1, 16, 100)  # 16 mel bins x 1 s of frames
        assert sent["feature_attention_mask"].sum().item() == 50  # half a second of audio
        audio_id = audio_engine._processor_or_tokenizer.audio_token_id
        assert sent["input_ids"][0].tolist().count(audio_id) == 12  # (50 frames -> 25 positions -> pooled)
        assert set(audio_engine._get_eos_tokens(return_ids=True)) == {audio_engine.tokenizer.eos_token_id}
    finally:
        session.close()


def test_two_sounds_change_the_next_token_logits(audio_engine):
    def hear(freq):
        return next_token_logits(audio_engine, [user_message("Listen", tone(freq))])

    assert (hear(220) - hear(3000)).abs().max().item() > 1e-5


def test_audio_rate_defaults_to_the_feature_extractor(tiny_qwen2_audio_dir):
    from transformers import AutoModelForMultimodalLM

    engine = kanibook.load(tiny_qwen2_audio_dir, model_cls=AutoModelForMultimodalLM)
    assert engine.mm_audio_sample_rate == 16000
    built = engine.build_prompt([ChatMessage.user(user_parts("Listen", tone(300, 1.0, rate=8000)))])
    assert built["feature_attention_mask"].sum().item() == 100  # one second, not two: resampled, not misread
