"""The prompt view counts each image's and each sound's tokens exactly as the processor expanded them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from kani import ChatMessage  # noqa: E402
from PIL import Image  # noqa: E402

import kanibook  # noqa: E402
from kanibook.media import user_message  # noqa: E402


def media_runs(view):
    return [(r.id, r.count) for r in view.placeholder_runs if r.multimodal]


def test_gemma3_image_tokens(tiny_gemma3_dir):
    engine = kanibook.load(tiny_gemma3_dir)
    processor = engine._processor_or_tokenizer
    image_id = processor.tokenizer.image_token_id
    messages = [
        user_message("First", Image.new("RGB", (28, 28), "red")),
        ChatMessage.assistant("Red."),
        user_message("Second", Image.new("RGB", (40, 10), "blue")),  # resized: still 4 tokens
    ]
    view = kanibook.show_prompt(engine, messages)
    ids = engine.build_prompt(messages)["input_ids"][0].tolist()
    assert view.token_ids == ids
    assert ids.count(image_id) == 2 * processor.image_seq_length == 8
    assert media_runs(view) == [(image_id, 4), (image_id, 4)]


def test_qwen2_audio_tokens(tiny_qwen2_audio_dir):
    from transformers import AutoModelForMultimodalLM

    engine = kanibook.load(tiny_qwen2_audio_dir, model_cls=AutoModelForMultimodalLM, audio_sr=16000)
    audio_id = engine._processor_or_tokenizer.audio_token_id
    clip = lambda seconds: (np.zeros(int(seconds * 16000)) + 0.1, 16000)  # noqa: E731
    messages = [user_message("Hear", clip(1.0)), ChatMessage.assistant("Noise."), user_message("And", clip(0.5))]
    view = kanibook.show_prompt(engine, messages)
    built = engine.build_prompt(messages)
    ids = built["input_ids"][0].tolist()
    assert view.token_ids == ids
    # the encoder halves the mel frames twice (conv stride 2, then pooling): 100 frames -> 25 tokens, 50 -> 12
    frames = built["feature_attention_mask"].sum(-1).tolist()
    assert frames == [100, 50]
    expected = [((f - 1) // 2 + 1 - 2) // 2 + 1 for f in frames]
    assert expected == [25, 12]
    assert media_runs(view) == [(audio_id, 25), (audio_id, 12)]
    assert ids.count(audio_id) == 37
