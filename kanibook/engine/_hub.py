"""Offline-safe model resolution: a local folder never touches the network; a missing id fails fast and clearly."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..exceptions import ModelNotFoundError

__all__ = ["is_local_model", "check_model_available", "hub_offline"]

HUB_TIMEOUT_S = 5.0


def is_local_model(model_id: str | os.PathLike) -> bool:
    return Path(model_id).expanduser().is_dir()


def check_model_available(model_id: str) -> bool:
    """Make sure ``model_id`` can be loaded; return True if it must be loaded offline (local or cached).

    Raises :class:`ModelNotFoundError` within seconds when it is neither a local folder, nor in the Hugging Face
    cache, nor reachable on the Hub.
    """
    if is_local_model(model_id):
        return True
    looks_like_path = str(model_id).startswith((".", "/", "~")) or str(model_id).count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(f"No model folder at {str(model_id)!r}: check the path, or pass a Hugging Face model id.")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return True
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(
            f"Model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
            "download it on a machine with network access, or pass a local folder."
        )
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(model_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return False  # exists; from_pretrained will explain the token it needs
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"No model {model_id!r} on the Hugging Face Hub: check the spelling (org/name), or pass a local folder."
        ) from None
    except Exception as e:  # network errors of every kind: DNS, refused, timeout, proxy
        raise ModelNotFoundError(
            f"Cannot reach the Hugging Face Hub for {model_id!r} ({type(e).__name__}) and it is not cached: "
            "connect to the network, or pass a local folder (kanibook.load() with no id uses the embedded model)."
        ) from None
    return False


@contextlib.contextmanager
def hub_offline(enabled: bool = True):
    """Within the block, huggingface_hub makes no network calls and kani's model-card lookup stays quiet.

    kani looks for a model card on the Hub even for a local folder; offline, that fails at once, and its warning
    (with a traceback) says nothing useful, so it is silenced for the duration.
    """
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    # kani's model-card lookup (fails offline) and its "falling back to the chat template" note (the default)
    quiet = [logging.getLogger(name) for name in ("kani.utils.huggingface", "kani.model_specific")]
    saved_flag, saved_levels = constants.HF_HUB_OFFLINE, [logger.level for logger in quiet]
    constants.HF_HUB_OFFLINE = True
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        for logger, level in zip(quiet, saved_levels):
            logger.setLevel(level)
