"""The lab's native GGUF row: llama.cpp running the model's own GGUF file, measured like every other setting.

People with a GGUF file face this choice: run the file as it is (llama.cpp, its own k-quant or Q4 format) or
dequantize it and re-quantize with bitsandbytes. ``compare_quantization(..., settings="fp32,nf4,gguf")`` puts both on
the same reference text: the setting ``"gguf"`` loads the GGUF file the compared model came from (the embedded
model's Q4_1 file, or the ``.gguf`` file passed as ``model``) with ``backend="llama.cpp"``, scores the text from
llama.cpp's own logits (``logits_all``) through :func:`kanibook.scoring.scores_from_logits`, and answers the prompts
through the same engine interface. Its weights are the file's size (llama.cpp maps the file into memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import KanibookError

__all__ = ["NATIVE_NAMES", "NativeGGUF", "gguf_source", "is_native", "load_native", "native_footprint", "native_scores"]

#: What ``settings`` may say for the native row.
NATIVE_NAMES = ("gguf", "llama.cpp")


@dataclass(frozen=True)
class NativeGGUF:
    """The ``quant`` of the native setting: the GGUF file to run (None: the compared model has none)."""

    path: str | None


def is_native(setting) -> bool:
    return isinstance(getattr(setting, "quant", None), NativeGGUF)


def gguf_source(model_path) -> str | None:
    """The GGUF file a compared model came from: the embedded model's, or the ``.gguf`` file itself."""
    from ..demo_model import DEMO_MODEL_NAME, demo_gguf_path

    path = Path(os.fspath(model_path))
    if str(path).lower().endswith(".gguf"):
        return str(path)
    if path.name == DEMO_MODEL_NAME:
        return str(demo_gguf_path())
    return None


def load_native(setting, n_ctx: int = 2048):
    """The llama.cpp engine of the native setting, keeping the logits of every position (for the quality pass)."""
    if setting.quant.path is None:
        raise KanibookError(
            "no GGUF file for this model: compare a .gguf file, e.g. compare_quantization('model.gguf', 'fp32,nf4,gguf')."
        )
    from ..engine import load

    return load(setting.quant.path, backend="llama.cpp", model_load_kwargs={"logits_all": True, "n_ctx": n_ctx})


def native_footprint(engine) -> dict:
    size = Path(engine.model_id).stat().st_size
    return {"weights_bytes": size, "footprint_bytes": size}


def native_scores(engine, ids: list[int], top_k: int, keep_full: bool):
    """Teacher-forced scores of ``ids`` from llama.cpp's logits, on the model thread."""
    from ..engine._model_thread import model_thread
    from ..scoring import scores_from_logits

    def run():
        import numpy as np

        llama = engine.model
        if len(ids) > llama.n_ctx():
            raise KanibookError(f"The reference text has {len(ids)} tokens, more than llama.cpp's context {llama.n_ctx()}.")
        llama.reset()
        llama.eval(list(ids))
        logits = np.array(llama.scores[: len(ids) - 1], dtype=np.float32)
        llama.reset()  # the next prompt must not reuse this evaluation
        return scores_from_logits(list(ids), logits, top_k=top_k, keep_full=keep_full)

    return model_thread().run(run)
