"""A model that cannot be found fails within seconds, in one line that says what to do."""

from __future__ import annotations

import time

import pytest

import kanibook
from kanibook.exceptions import ModelNotFoundError


def _fails_fast(model_id, match):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=match) as info:
        kanibook.load(model_id)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "\n" not in message
    assert elapsed < 10, elapsed
    return message


def test_offline_unknown_model_id(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _fails_fast("someone/no-such-model-xyz", "not in the local Hugging Face cache")
    assert "local folder" in message


def test_unreachable_hub(monkeypatch):
    """Here the Hub is unreachable, as on a laptop offline: a clear message instead of retries or a hang."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    _fails_fast("someone/no-such-model-xyz", "Cannot reach the Hugging Face Hub")


def test_a_missing_local_folder(tmp_path):
    message = _fails_fast(str(tmp_path / "nope"), "No model folder at")
    assert "nope" in message


def test_a_local_folder_never_touches_the_network(demo_model_dir, monkeypatch):
    """Loading a local folder with every HTTP request made to fail still works (and says nothing about the Hub)."""
    import socket

    attempts = []

    def refuse(self, *args, **kwargs):
        attempts.append(args)
        raise OSError("network used while loading a local folder")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: attempts.append(a) or refuse(None))
    engine = kanibook.load(demo_model_dir)
    assert engine.model is not None
    assert attempts == []
