"""Media a model cannot take, or that cannot be read: one line that says what to do, nothing generated."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("kani.ext.multimodal_core", reason="needs pip install 'kanibook[multimodal]'")

from kani import ChatMessage, Kani  # noqa: E402
from PIL import Image  # noqa: E402

import kanibook  # noqa: E402
from kanibook.exceptions import KanibookError, MediaError  # noqa: E402
from kanibook.media import user_parts  # noqa: E402

from _media_checks import Recorder  # noqa: E402  (tests/unit/_media_checks.py)


@pytest.fixture
def text_session(demo_engine):
    session = kanibook.ChatSession(demo_engine)
    session.kani.chat_history = [ChatMessage.user("Hello"), ChatMessage.assistant("Hi there.")]
    yield session
    session.close()


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and isinstance(error, KanibookError)
    return text


def test_image_to_a_text_only_model_through_the_session(text_session, demo_engine):
    before = list(text_session.history)
    with Recorder(demo_engine.model) as gen, pytest.raises(MediaError) as info:
        text_session.send("What is in this picture?", media=Image.new("RGB", (8, 8)), max_new_tokens=3)
    text = one_line(info.value)
    assert "cannot take image" in text and "text-only" in text and "Nothing was generated" in text
    assert gen.calls == []
    assert text_session.history == before  # the conversation as it was; the refused message was not added
    assert not text_session.is_generating
    assert text_session.send("Thanks", max_new_tokens=2).error is None  # and it goes on


def test_image_to_a_text_only_model_through_kani(demo_engine, run_async):
    kani = Kani(demo_engine, chat_history=[ChatMessage.user("Hello"), ChatMessage.assistant("Hi there.")])
    with Recorder(demo_engine.model) as gen, pytest.raises(MediaError) as info:
        run_async(kani.chat_round(user_parts("Describe this", Image.new("RGB", (8, 8))), max_new_tokens=3))
    assert "cannot take image" in one_line(info.value)
    assert gen.calls == []
    assert [m.text for m in kani.chat_history[:2]] == ["Hello", "Hi there."]  # earlier turns kept


def test_audio_to_an_image_model(llava_engine):
    session = kanibook.ChatSession(llava_engine)
    try:
        with Recorder(llava_engine.model) as gen, pytest.raises(MediaError) as info:
            session.send("Listen", media=[(np.zeros(1600), 16000)], max_new_tokens=3)
        text = one_line(info.value)
        assert "cannot take audio" in text and "takes image only" in text
        assert gen.calls == [] and session.history == []
    finally:
        session.close()


def test_unreadable_file_through_the_session(text_session, demo_engine, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"not really a png")
    before = list(text_session.history)
    with Recorder(demo_engine.model) as gen:
        for media in (bad, tmp_path / "missing.wav", object()):
            with pytest.raises(MediaError) as info:
                text_session.send("Look", media=media)
            one_line(info.value)
    assert gen.calls == [] and text_session.history == before


def test_an_image_earlier_in_the_conversation_then_a_text_only_model(llava_engine, demo_engine):
    session = kanibook.ChatSession(llava_engine)
    try:
        assert session.send("Colour?", media=Image.new("RGB", (28, 28), "red"), max_new_tokens=2).error is None
        kept = list(session.history)
        session.use(demo_engine)
        with Recorder(demo_engine.model) as gen, pytest.raises(MediaError) as info:
            session.send("And now?", max_new_tokens=2)
        assert "cannot take image" in one_line(info.value) and gen.calls == []
        assert session.history == kept
    finally:
        session.close()
