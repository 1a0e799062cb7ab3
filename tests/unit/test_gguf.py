"""Any local GGUF file loads through ``kanibook.load``: converted once, verified, rebuilt when corrupt."""

from __future__ import annotations

import shutil

import pytest
from kani import ChatMessage, Kani

import kanibook
from kanibook.demo_model import demo_gguf_path
from kanibook.engine._gguf import MANIFEST, gguf_model_path, is_valid_model_dir
from kanibook.exceptions import KanibookError


@pytest.fixture
def own_gguf(tmp_path, monkeypatch, demo_model_dir):
    """The embedded model's GGUF under another name and folder, and a cache of our own."""
    monkeypatch.setenv("KANIBOOK_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "downloads"
    folder.mkdir()
    path = folder / "my-model.Q4_1.gguf"
    shutil.copyfile(demo_gguf_path(), path)
    return path


@pytest.mark.slow
def test_a_gguf_file_loads_answers_and_is_rebuilt_when_corrupt(own_gguf, run_async):
    engine = kanibook.load(own_gguf)
    folder = gguf_model_path(own_gguf, progress=False)
    assert engine.model_id == str(folder) and is_valid_model_dir(folder)
    assert (folder / MANIFEST).is_file() and engine.tokenizer.chat_template  # the file's own chat template

    async def ask():
        return await Kani(engine).chat_round_str("What is 2 + 2?", max_new_tokens=8)

    assert run_async(ask()).strip()
    assert engine.last_stats.completion_tokens > 0

    # a later load uses the folder as it is (same path); a damaged one is rebuilt, never loaded
    assert kanibook.load(own_gguf.parent, gguf_file=own_gguf.name).model_id == str(folder)
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 64)
    assert not is_valid_model_dir(folder)
    again = kanibook.load(str(own_gguf))
    assert again.model_id == str(folder) and is_valid_model_dir(folder)
    prompt = again.build_prompt([ChatMessage.user("hi")])["input_ids"]
    assert prompt.shape[-1] == engine.build_prompt([ChatMessage.user("hi")])["input_ids"].shape[-1]


def test_a_file_that_is_not_gguf_gets_one_line(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    with pytest.raises(KanibookError, match=r"not a GGUF file") as info:
        kanibook.load(fake)
    assert "\n" not in str(info.value)


def test_a_missing_or_ambiguous_gguf_says_what_to_pass(tmp_path, own_gguf):
    with pytest.raises(KanibookError, match="No GGUF file"):
        kanibook.load(tmp_path / "nowhere.gguf")
    shutil.copyfile(own_gguf, own_gguf.with_name("second.gguf"))
    with pytest.raises(KanibookError, match="gguf_file="):
        gguf_model_path(own_gguf.parent)
    with pytest.raises(KanibookError, match="not in the local Hugging Face cache"):
        kanibook.load("someone/some-model-GGUF", gguf_file="model.Q4_K_M.gguf")
