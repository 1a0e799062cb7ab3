"""``%%chat --image VAR`` / ``--audio VAR``: the medium reaches the model and shows above the reply, inertly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from IPython.core.error import UsageError  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402
from PIL import Image  # noqa: E402

import kanibook  # noqa: E402
from kanibook.media import as_part  # noqa: E402
from kanibook.media.view import MediaView  # noqa: E402

from _media_checks import Recorder, decode_png, media_audit  # noqa: E402  (tests/unit/_media_checks.py)


@pytest.fixture(scope="module")
def audio_engine(tiny_qwen2_audio_dir):
    from transformers import AutoModelForMultimodalLM

    return kanibook.load(tiny_qwen2_audio_dir, model_cls=AutoModelForMultimodalLM, audio_sr=16000)


def chat(ip, line, cell):
    with capture_output() as captured:
        ip.run_cell_magic("chat", line, cell)
    return [o.data for o in captured.outputs]


def test_chat_with_an_image_variable(ip, current, llava_engine):
    session = current(llava_engine)
    ip.user_ns["photo"] = Image.new("RGB", (28, 28), (200, 10, 10))
    with Recorder(llava_engine.model) as rec:
        outputs = chat(ip, "--image photo --max-new-tokens 3 --temperature 0", "What is this?")
    strip = outputs[0]
    assert strip["text/plain"] == "[image 28\u00d728: photo]"
    assert media_audit(strip["text/html"]) == []
    thumb = decode_png(strip["text/html"])
    assert thumb.size == (28, 28) and thumb.getpixel((5, 5)) == (200, 10, 10)
    assert "kb-chat-output" in outputs[-1]["text/html"]  # the reply comes after the image
    assert tuple(rec.calls[0]["pixel_values"].shape) == (1, 3, 28, 28)
    sent = session.history[-2]
    assert sent.parts[0] == "What is this?" and type(sent.parts[1]).__name__ == "ImagePart"


def test_chat_with_an_audio_variable_and_a_wav_path(ip, current, audio_engine, tmp_path):
    import wave

    current(audio_engine)
    t = np.arange(8000) / 16000
    ip.user_ns["clip"] = (0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    path = tmp_path / "two.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000, "<i2").tobytes())
    ip.user_ns["recording"] = str(path)
    with Recorder(audio_engine.model) as rec:
        outputs = chat(ip, "--audio clip --audio recording --max-new-tokens 2", "Compare these")
    strip = outputs[0]
    assert strip["text/plain"] == "[audio 0.50 s at 16000 Hz: clip]\n[audio 1.00 s at 16000 Hz: recording (two.wav)]"
    assert strip["text/html"].count("<audio controls") == 2 and media_audit(strip["text/html"]) == []
    assert rec.calls[0]["feature_attention_mask"].sum(-1).tolist() == [50, 100]


@pytest.mark.parametrize(
    "line, words",
    [
        ("--image nowhere", "no variable 'nowhere'"),
        ("--audio photo", "pass it with --image"),
        ("--image number", "Cannot send a int"),
    ],
)
def test_media_mistakes_are_one_line_usage_errors(ip, current, llava_engine, line, words):
    session = current(llava_engine)
    ip.user_ns.update(photo=Image.new("RGB", (4, 4)), number=3)
    with Recorder(llava_engine.model) as rec, pytest.raises(UsageError) as info:
        chat(ip, line, "Look")
    assert words in str(info.value) and "\n" not in str(info.value)
    assert rec.calls == [] and session.history == []


def test_image_for_a_text_only_model_is_refused_before_anything_shows(ip, current, demo_engine):
    session = current(demo_engine)
    ip.user_ns["photo"] = Image.new("RGB", (4, 4))
    with capture_output() as captured, pytest.raises(UsageError) as info:
        ip.run_cell_magic("chat", "--image photo", "Describe")
    assert "cannot take image" in str(info.value) and "text-only" in str(info.value)
    assert captured.outputs == [] and session.history == []


def test_hostile_captions_and_file_names_are_inert(hostile, tmp_path):
    image = as_part(Image.new("RGB", (300, 100), "white"))
    sound = as_part((np.zeros(160), 16000))
    html = MediaView([image, sound], [hostile, hostile])._repr_mimebundle_()["text/html"]
    assert media_audit(html) == []
    assert decode_png(html).size == (160, 53)  # a thumbnail, not the full image
    name = "\"'><img src=x onerror=alert(1)>\u202e.png"
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    from kanibook.media.view import media_from_variables

    parts, captions = media_from_variables(["v"], [], {"v": str(path)})
    html = MediaView(parts, captions)._repr_mimebundle_()["text/html"]
    assert media_audit(html) == [] and "onerror=alert(1)&gt;" in html


def test_a_long_sound_gets_a_label_not_a_player():
    from kanibook.media.view import MAX_PLAYER_BYTES

    long = as_part((np.zeros(MAX_PLAYER_BYTES // 2 + 16000), 16000))  # 16-bit samples: just over the limit
    bundle = MediaView([long], ["lecture"])._repr_mimebundle_()
    assert "<audio" not in bundle["text/html"] and "too long for a player" in bundle["text/html"]
    assert media_audit(bundle["text/html"]) == [] and len(bundle["text/html"]) < 10_000
    short = MediaView([as_part((np.zeros(16000), 16000))])._repr_mimebundle_()["text/html"]
    assert short.count("<audio controls") == 1


def test_terminal_shows_a_line_per_medium(ip, current, llava_engine, capsys):
    current(llava_engine)
    ip.user_ns["photo"] = Image.new("RGB", (28, 28))
    ip.run_cell_magic("chat", "--image photo --max-new-tokens 2", "Hi")
    assert capsys.readouterr().out.startswith("[image 28\u00d728: photo]\n")
