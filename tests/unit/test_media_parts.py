"""Images and sounds from Python become kani-multimodal-core parts; what cannot be read is one clear line."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from kani import ChatMessage, ChatRole  # noqa: E402
from kani.ext.multimodal_core import AudioPart, ImagePart  # noqa: E402
from PIL import Image  # noqa: E402

from kanibook.exceptions import KanibookError, MediaError  # noqa: E402
from kanibook.media import as_part, describe_part, user_message, user_parts  # noqa: E402


def wav_bytes(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buffer.getvalue()


def test_pil_image_and_part_pass_through():
    import gc

    img = Image.new("RGB", (30, 20), "red")
    part = as_part(img)
    assert isinstance(part, ImagePart) and part.image.tobytes() == img.tobytes()
    assert as_part(part) is part
    assert describe_part(part) == "image 30\u00d720"
    del part  # kani's ImagePart closes its image when collected: the notebook's own image must survive that
    gc.collect()
    assert img.getpixel((0, 0)) == (255, 0, 0) and as_part(img).size == (30, 20)


@pytest.mark.parametrize(
    "array, mode, pixel",
    [
        (np.full((5, 7, 3), [10, 20, 30], np.uint8), "RGB", (10, 20, 30)),
        (np.full((5, 7), 0.5), "L", 127),  # floats in 0..1 scale to 0..255
        (np.full((5, 7, 4), 255, np.uint8), "RGBA", (255, 255, 255, 255)),
        (np.full((5, 7, 1), 300), "L", 255),  # out of range is clipped
    ],
)
def test_numpy_image(array, mode, pixel):
    part = as_part(array)
    assert isinstance(part, ImagePart)
    assert part.size == (7, 5) and part.image.mode == mode
    assert part.image.getpixel((3, 2)) == pixel


def test_numpy_audio_with_rate():
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    part = as_part((tone, 8000))
    assert isinstance(part, AudioPart) and part.sample_rate == 8000
    assert part.duration == pytest.approx(1.0)
    assert np.allclose(part.as_ndarray(sr=8000), tone, atol=1e-4)  # floats in -1..1 kept at 16-bit precision
    same = as_part(tone, sample_rate=8000)
    assert same.raw == part.raw
    stereo = as_part((np.stack([tone, -tone], axis=1), 8000))  # channels averaged: silence
    assert np.abs(stereo.as_ndarray(sr=8000)).max() < 1e-4
    assert describe_part(part) == "audio 1.00 s at 8000 Hz"


def test_wav_file(tmp_path):
    samples = (np.sin(np.arange(1600) / 5) * 12000).astype("<i2")
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(samples, 16000))
    part = as_part(path)
    assert isinstance(part, AudioPart) and part.sample_rate == 16000
    assert np.frombuffer(part.raw, "<i2").tolist() == samples.tolist()
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(wav_bytes(np.stack([samples, samples], axis=1), 22050, channels=2))
    two = as_part(str(stereo))
    assert two.sample_rate == 22050 and np.frombuffer(two.raw, "<i2").tolist() == samples.tolist()


def test_image_file_and_bytes(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (9, 4), "blue").save(path)
    part = as_part(str(path))
    assert isinstance(part, ImagePart) and part.size == (9, 4) and part.image.getpixel((0, 0)) == (0, 0, 255)
    assert as_part(path.read_bytes()).size == (9, 4)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.png", "No file at"),
        (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hello"))[0], "neither an image"),
        (lambda d: (d / "broken.wav", (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"))[0],
         "not a readable WAV"),
        (lambda d: (d / "song.mp3", (d / "song.mp3").write_bytes(b"ID3"))[0], "convert it to WAV"),
        (lambda d: "https://example.com/cat.png", "does not download"),
        (lambda d: 42, "Cannot send a int"),
        (lambda d: np.zeros(100), "1-D array is audio"),
        (lambda d: np.zeros((2, 3, 7)), "H x W"),
        (lambda d: (np.zeros(0), 16000), "non-empty"),
    ],
)  # fmt: skip
def test_unreadable_media_is_one_line(tmp_path, make, words):
    with pytest.raises(MediaError) as info:
        as_part(make(tmp_path))
    message = str(info.value)
    assert words in message and "\n" not in message
    assert isinstance(info.value, KanibookError) and info.value.__cause__ is None


def test_user_message_and_parts():
    img = Image.new("RGB", (4, 4))
    parts = user_parts("What is this?", img, (np.zeros(160), 16000))
    assert parts[0] == "What is this?"
    assert [type(p) for p in parts[1:]] == [ImagePart, AudioPart]
    message = user_message("Look", img)
    assert isinstance(message, ChatMessage) and message.role == ChatRole.USER
    assert message.parts[0] == "Look" and isinstance(message.parts[1], ImagePart)
    assert isinstance(user_parts("", img)[0], ImagePart)  # no empty text part
