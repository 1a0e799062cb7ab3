"""The chat panel's attachments: an uploaded image or WAV file goes with the next message and shows in the list."""

from __future__ import annotations

import asyncio
import io
import re
import wave

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from kani import ChatMessage, Kani  # noqa: E402
from PIL import Image  # noqa: E402

import kanibook  # noqa: E402
from kanibook.conversation import transcript  # noqa: E402
from kanibook.render import safe  # noqa: E402
from kanibook.media import user_message  # noqa: E402

from _media_checks import Recorder, decode_png, media_audit  # noqa: E402  (tests/unit/_media_checks.py)


def png(colour, size=(28, 28)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(np.arange(int(seconds * rate)) / 3) * 8000).astype("<i2").tobytes())
    return buffer.getvalue()


def upload(panel, name: str, data: bytes, mime: str = "image/png") -> None:
    """What the browser's FileUpload sends: its new state, deserialized by the widget as it is from a real front end."""
    entry = {"name": name, "type": mime, "size": len(data), "content": memoryview(data),
             "last_modified": 1_700_000_000_000}  # fmt: skip
    panel.attachments.upload.set_state({"value": [entry]})


def test_uploaded_image_goes_with_the_next_message(llava_engine, run_async):
    async def scenario():
        panel = kanibook.chat(llava_engine, max_new_tokens=3)
        upload(panel, "red.png", png((220, 0, 0)))
        assert len(panel.attachments.parts) == 1 and panel.attachments.upload.value == ()
        preview = panel.attachments.preview.value
        assert "red.png" in preview and media_audit(preview) == []
        assert "kb-upload" in panel.attachments.upload._dom_classes
        assert panel.attachments.widget in panel.widget.children
        with Recorder(llava_engine.model) as rec:
            panel.send("What is this?")
            assert panel.attachments.parts == [] and panel.attachments.preview.value == ""
            await panel.wait()
        return panel, rec

    panel, rec = run_async(scenario())
    assert tuple(rec.calls[0]["pixel_values"].shape) == (1, 3, 28, 28)
    user = panel.kani.chat_history[0]
    assert user.parts[0] == "What is this?" and type(user.parts[1]).__name__ == "ImagePart"
    view = next(v for v in panel.messages if v.role == "user")
    assert view.media in view.widget.children and "kb-msg-media" in view.media._dom_classes
    assert decode_png(view.media.value).getpixel((3, 3)) == (220, 0, 0)
    assert "[image 28\u00d728: red.png]" in view.body.value
    assert panel.status == "ready" and panel.kani.chat_history[-1].role.value == "assistant"
    panel.close()


def test_unreadable_upload_is_a_status_line(llava_engine, run_async):
    async def scenario():
        panel = kanibook.chat(llava_engine)
        upload(panel, "notes.png", b"just text")
        return panel

    panel = run_async(scenario())
    assert panel.attachments.parts == [] and "notes.png" in panel.status and "neither an image" in panel.status
    panel.close()


def test_text_only_model_refuses_and_keeps_the_attachment(demo_engine, run_async):
    async def scenario():
        panel = kanibook.chat(demo_engine, max_new_tokens=2)
        upload(panel, "cat.png", png("white"))
        panel.input.value = "Describe"
        with Recorder(demo_engine.model) as rec:
            panel.send_button.click()
            await asyncio.sleep(0.05)
        return panel, rec

    panel, rec = run_async(scenario())
    assert "cannot take image" in panel.status and "text-only" in panel.status
    assert rec.calls == [] and panel.kani.chat_history == [] and not panel.busy
    assert len(panel.attachments.parts) == 1 and panel.input.value == "Describe"  # nothing lost: try again
    panel.close()


def test_wav_upload_becomes_an_audio_player(tiny_qwen2_audio_dir, run_async):
    from transformers import AutoModelForMultimodalLM

    engine = kanibook.load(tiny_qwen2_audio_dir, model_cls=AutoModelForMultimodalLM, audio_sr=16000)

    async def scenario():
        panel = kanibook.chat(engine, max_new_tokens=2)
        upload(panel, "clip.wav", wav(0.5), "audio/wav")
        with Recorder(engine.model) as rec:
            panel.send("Listen")
            await panel.wait()
        return panel, rec

    panel, rec = run_async(scenario())
    assert rec.calls[0]["feature_attention_mask"].sum().item() == 50
    view = next(v for v in panel.messages if v.role == "user")
    assert "<audio controls" in view.media.value and media_audit(view.media.value) == []
    assert "[audio 0.50 s at 16000 Hz: clip.wav]" in view.body.value
    panel.close()


def test_hostile_file_names_are_inert(llava_engine, hostile, run_async):
    async def scenario():
        panel = kanibook.chat(llava_engine)
        upload(panel, hostile, png("blue"))
        return panel

    panel = run_async(scenario())
    assert media_audit(panel.attachments.preview.value) == []
    panel.close()


def test_history_with_images_shows_them_and_exports(llava_engine, tmp_path):
    message = user_message("Old picture", Image.new("RGB", (28, 28), (0, 128, 0)))
    transcript_kani = Kani(llava_engine, chat_history=[message, ChatMessage.assistant("Green.")])
    panel = kanibook.chat(transcript_kani)
    view = panel.messages[0]
    assert decode_png(view.media.value).getpixel((1, 1)) == (0, 128, 0)
    md = panel.export_markdown(tmp_path / "chat.md").read_text()
    assert safe.markdown_literal("Old picture[image 28\u00d728]") in md  # a reference, not the data
    saved = transcript.load_json(panel.export_json(tmp_path / "chat.json"))
    back = saved.chat_history[0].parts[1]
    assert type(back).__name__ == "ImagePart" and back.image.convert("RGB").getpixel((1, 1)) == (0, 128, 0)
    assert re.search(r'"img_data":\s*"data:image/png;base64,', (tmp_path / "chat.json").read_text())
    panel.close()
