"""The quantization lab: load each setting in turn, measure what it costs and what it changes, release it.

For every setting, one after another (the reference first):

1. **load** it as a kanibook engine (``kanibook.load(model, quant=...)``), timed; measure its weights;
2. **quality**: score the reference text teacher-forced (:func:`kanibook.scoring.score_ids`, ``keep_full=True``) and
   compare with the reference's scores (:mod:`.metrics`); only the reference's full matrix is kept;
3. **answers**: one short warm-up answer (the first call of a model pays for its kernels' set-up), then each prompt
   answered greedily ``repeats`` times through the engine's stream; time to first token and decode speed are the
   medians over those answers, peak memory their maximum (:class:`~kanibook.TurnStats`), the answer's token ids
   those of its first run (greedy: every run gives the same);
4. **release** the model (``del``, ``gc.collect()``, CUDA's cache emptied, freed heap handed back to the system) and
   measure the memory again, so each setting starts where the first one did.

A setting that cannot load or run (bitsandbytes missing, an unsupported backend or dtype) becomes a row with the
reason; the others still run. All torch work runs on kanibook's model thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any

from .._progress import progress_bar
from ..exceptions import KanibookError
from ..layers.compare import lab_capture, lab_record
from .settings import Setting, resolve_settings
from .answers import answer_stream, answer_table, answers_note, token_texts, top_tokens
from .measure import compute_dtype_of, footprint, memory_now, release_memory, speed
from .native import NativeGGUF, gguf_source, is_native, load_native, native_footprint, native_scores
from .texts import DEFAULT_PROMPTS, REFERENCE_TEXT

__all__ = ["compare_quantization", "compute_dtype_of", "release_memory", "memory_now"]

_STEPS = ("load", "quality", "answers")
_LAST_REPORTS: dict[str, Any] = {}  # model path -> the latest report (recommend_quant ranks by it)


def compare_quantization(
    model: Any = None,
    settings: Any = None,
    *,
    prompts: Any = None,
    reference_text: str | None = None,
    device: str | None = None,
    compute_dtype: str | None = None,
    max_new_tokens: int = 24,
    repeats: int = 2,
    progress: bool = True,
    layers: bool | None = None,
):
    """Load a model under several quantization settings, one after another, and measure cost and quality.

    :param model: A local model folder or a Hugging Face id in the local cache; None for the embedded demo model.
    :param settings: None for every setting this machine runs (the reference, bf16, fp16 on a GPU, int8, nf4,
        nf4-dq, fp4, fp4-dq); else a comma-separated string or a list of preset names, ``BitsAndBytesConfig``
        objects, ``(label, config)`` pairs, or a ``{label: config}`` dict. The reference (fp32 on a CPU, bf16 on a
        GPU) is always measured first.
    :param prompts: Questions each setting answers greedily (a string or a list); None for two built-in ones.
    :param reference_text: The text scored teacher-forced under every setting; None for a built-in ~300-token text.
    :param device: ``"cpu"``, ``"cuda"``, ...; None for CUDA when present, else the CPU.
    :param compute_dtype: The compute dtype of the 4-bit presets (default ``"bfloat16"``).
    :param max_new_tokens: The longest answer, in tokens.
    :param repeats: How many times each prompt is answered (after one short warm-up answer); the speed figures are
        the medians over all these answers, so one slow answer on a busy machine does not decide them.
    :param progress: Show a progress bar across settings and steps.
    :param layers: Also record what each setting does inside the network (weight errors, outliers, the residual
        stream and the logit lens against the reference: ``report.show_layers(label)``, :mod:`kanibook.layers`);
        None: on where it costs under a third of the lab's time.
    :returns: A :class:`~kanibook.QuantReport`.
    """
    path = _model_path(model)
    device = device or _default_device()
    resolved = resolve_settings(settings, device)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or DEFAULT_PROMPTS)
    if max_new_tokens < 1:
        raise KanibookError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
    if not isinstance(repeats, int) or repeats < 1:
        raise KanibookError(f"repeats must be a whole number of at least 1, not {repeats!r}.")
    text = REFERENCE_TEXT if reference_text is None else str(reference_text)
    lab = _Lab(path, device, compute_dtype, prompts, text, max_new_tokens, repeats)
    lab.layers = layers
    started = time.perf_counter()
    steps = len(resolved) * len(_STEPS)
    with _quiet_loading(), progress_bar(steps, "quantization lab", unit="step", enabled=progress) as bar:
        for setting in resolved:
            lab.run_setting(setting, bar)
    report = lab.report(time.perf_counter() - started)
    _LAST_REPORTS[str(path)] = report
    return report


class _Lab:
    """The state of one comparison: the reference's scores, and what was measured so far."""

    def __init__(self, path, device: str, compute_dtype, prompts: list[str], text: str, max_new_tokens: int,
                 repeats: int = 1):  # fmt: skip
        self.path, self.device, self.compute_dtype = path, device, compute_dtype
        self.prompts, self.text, self.max_new_tokens, self.repeats = prompts, text, max_new_tokens, repeats
        self.reference = None  # the reference's TokenScores (full fp32 matrix kept)
        self.tokenizer = None
        self.rows: list[dict] = []
        self.positions: dict[str, dict] = {}
        self.answers: dict[str, list[dict]] = {}
        self.notes: list[str] = []
        self.estimates = _estimates(path)
        self.layers, self.recorder = None, None  # the layers pass (kanibook.layers.compare.lab_record)
        release_memory(device)
        self.start_memory = memory_now(device)

    def run_setting(self, setting: Setting, bar) -> None:
        row = _empty_row(setting, self.estimates)
        self.rows.append(row)
        engine, captured = None, {}
        try:
            bar.set_description(f"{setting.label}: load")
            if setting.needs_bitsandbytes:
                from ..exceptions import require

                require("bitsandbytes", "quant", f"The {setting.label!r} setting")
            row["memory_before_load_bytes"] = memory_now(self.device)
            engine, row["load_s"] = _timed(self._load, setting)
            row.update(native_footprint(engine) if is_native(setting) else footprint(engine.model))
            bar.update(1)
            bar.set_description(f"{setting.label}: quality")
            with lab_capture(self, engine, setting) as captured:  # the layers' hooks read this pass too
                (quality, scores), row["quality_s"] = _timed(self._quality, engine, setting)
            row.update(quality.stats)
            native = is_native(setting)
            row["compute_dtype"] = "llama.cpp (the file's own format)" if native else compute_dtype_of(engine.model)
            self.positions[setting.label] = {"kl": quality.kl, "top": top_tokens(scores, self.tokenizer),
                                             "flips": [list(f) for f in quality.flips]}  # fmt: skip
            bar.update(1)
            bar.set_description(f"{setting.label}: answers")
            answers, row["answers_s"] = _timed(self._answers, engine)
            self.answers[setting.label] = answers
            row.update(speed(answers, row.get("memory_before_load_bytes")))
            bar.update(1)
            if self.layers is not False:
                bar.set_description(f"{setting.label}: layers")
                lab_record(self, engine, setting, row, captured)
            row["available"] = True
        except Exception as e:  # noqa: BLE001 - the setting becomes a row with its reason; the others still run
            if setting.reference:
                raise KanibookError(
                    f"The reference setting {setting.label!r} failed ({type(e).__name__}: {_first_line(e)}): "
                    "nothing can be compared without it."
                ) from e
            row["reason"] = _reason(e)
            bar.update(len(_STEPS) - sum(1 for k in ("load_s", "quality_s", "answers_s") if row.get(k) is not None))
        finally:
            engine = None
            captured.clear()  # the layers' hooks hold the model's blocks: let them go with it
            release_memory(self.device)
            row["memory_after_release_bytes"] = memory_now(self.device)

    def _load(self, setting: Setting):
        from ..engine import load

        if is_native(setting):
            return load_native(replace(setting, quant=NativeGGUF(gguf_source(self.path))))
        engine = load(self.path, quant=setting.quant, quant_compute_dtype=self.compute_dtype, device=self.device)
        if self.tokenizer is None:
            self.tokenizer = engine.tokenizer
        return engine

    def _quality(self, engine, setting: Setting):
        from ..scoring import score_ids
        from .metrics import compare_scores

        ids = self.tokenizer(self.text)["input_ids"]
        if len(ids) < 2:
            raise KanibookError("The reference text is too short: give it at least two tokens.")
        if is_native(setting):
            scores = native_scores(engine, ids, top_k=3, keep_full=True)
        else:
            scores = score_ids(engine.model, ids, top_k=3, keep_full=True)
        if setting.reference:
            self.reference = scores
        quality = compare_scores(self.reference, scores)
        if not setting.reference:
            scores.full_logprobs = None  # only the reference's matrix is kept
        return quality, scores

    def _answers(self, engine) -> list[dict]:
        """Each prompt's answer (its first run), with the stats of every run in ``runs`` (after a warm-up)."""
        note = answers_note(engine)  # a model without a chat template continues the prompts as plain text
        if note and note not in self.notes:
            self.notes.append(note)

        async def one(prompt: str, max_new_tokens: int) -> dict:
            completion = None
            async for item in answer_stream(engine, prompt, max_new_tokens):
                if not isinstance(item, str):
                    completion = item
            stats = completion.stats
            token_ids = getattr(completion, "token_ids", None)
            if token_ids is None:  # an engine that does not report its ids (llama.cpp): the same tokenizer's reading
                token_ids = self.tokenizer(completion.message.text or "", add_special_tokens=False)["input_ids"]
            return {"prompt": prompt, "text": completion.message.text or "", "token_ids": token_ids,
                    "stats": stats.as_dict()}  # fmt: skip

        _run_coroutine(one(self.prompts[0], min(4, self.max_new_tokens)))  # warm-up: not measured
        answers = [_run_coroutine(one(p, self.max_new_tokens)) for p in self.prompts]
        for answer in answers:
            answer["runs"] = [answer["stats"]]
        for _ in range(self.repeats - 1):
            for answer in answers:
                answer["runs"].append(_run_coroutine(one(answer["prompt"], self.max_new_tokens))["stats"])
        return answers

    def report(self, total_s: float):
        from .report import QuantReport, machine_info

        ref_label = self.rows[0]["label"]
        answers = answer_table(self.prompts, self.answers, ref_label, self.tokenizer)
        tokens = [] if self.reference is None else token_texts(self.reference.token_ids, self.tokenizer)
        return QuantReport(
            model=str(self.path),
            device=self.device,
            rows=self.rows,
            tokens=tokens,
            positions=self.positions,
            answers=answers,
            machine=machine_info(self.device),
            start_memory_bytes=self.start_memory,
            total_s=total_s,
            repeats=self.repeats,
            layers=self.recorder.close() if self.recorder is not None else {},
            notes=self.notes,
        )


def _empty_row(setting: Setting, estimates: dict) -> dict:
    return {
        "label": setting.label,
        "preset": setting.preset,
        "description": setting.description,
        "reference": setting.reference,
        "available": False,
        "reason": None,
        "weights_bytes": None,
        "weights_estimate_bytes": estimates.get(setting.preset),
        "footprint_bytes": None,
        "peak_memory_bytes": None,
        "peak_added_bytes": None,
        "memory_before_load_bytes": None,
        "memory_kind": None,
        "compute_dtype": None,
        "load_s": None,
        "quality_s": None,
        "answers_s": None,
        "ttft_s": None,
        "decode_tok_s": None,
        "speed_answers": None,
    }


def _estimates(path) -> dict:
    from ..memory_view import estimate_memory

    try:
        estimate = estimate_memory(path, context_length=1)
    except Exception:  # noqa: BLE001 - the comparison still runs; the estimate column stays empty
        return {}
    return {r.preset: r.weights_bytes for r in estimate.rows}


# ---- helpers --------------------------------------------------------------------------------------------------------


def _model_path(model: Any):
    if model is None:
        from ..demo_model import demo_model_path

        return demo_model_path()
    model_id = getattr(model, "model_id", None)  # a loaded engine: compare its model
    return str(model_id) if model_id is not None else os.fspath(model)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _run_coroutine(coro):
    """Run a coroutine to the end from sync code, also inside a notebook (whose loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def runner():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=runner, name="kanibook-quant-answers")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _reason(error: BaseException) -> str:
    if isinstance(error, KanibookError):
        return _first_line(error)
    return f"{type(error).__name__}: {_first_line(error)}"


@contextlib.contextmanager
def _quiet_loading():
    """For the comparison only: bitsandbytes' logger (a line per 8-bit matrix product on a CPU) is quieted, and
    transformers' own progress bars (one per load) give way to the lab's."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    bars = hf_logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
