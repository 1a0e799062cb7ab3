"""The quantization lab's report: the raw figures as plain data, saved and loaded as JSON, displayed in notebooks.

``report.rows`` is a list of dicts, one per setting (the reference first); a setting that could not run has
``available=False`` and a ``reason``. The keys (sizes in bytes, times in seconds):

- cost: ``weights_bytes`` (measured, quantization state included), ``weights_estimate_bytes`` (from the config,
  :func:`kanibook.estimate_memory`), ``footprint_bytes`` (``model.get_memory_footprint()``); memory while answering,
  separate from the weights: ``peak_memory_bytes`` (``memory_kind``: ``"process"`` RSS on a CPU, ``"cuda"``
  allocated on a GPU) and ``peak_added_bytes``, how far that peak rose above ``memory_before_load_bytes`` (on a CPU
  it holds the weights *and* what the kernels allocate while computing: bitsandbytes' CPU kernels dequantize the
  weights at every step); ``load_s``; ``ttft_s`` (time to first token) and ``decode_tok_s``, medians over
  ``speed_answers`` answers (each prompt answered ``repeats`` times after a warm-up); ``quality_s`` and
  ``answers_s`` (the time of each step); ``memory_after_release_bytes``; ``compute_dtype``, the dtype the matrix
  products really ran in (read from the loaded layers);
- quality against the reference (see :mod:`kanibook.quant.metrics`): ``ppl``, ``ppl_ratio``, ``ln_ppl_ratio`` (±
  ``ln_ppl_ratio_err``), ``kld_mean`` (± ``kld_err``), ``kld_median``, ``kld_p90``, ``kld_p95``, ``kld_p99``,
  ``kld_max``, ``same_top_pct``, ``delta_p_mean_pct`` (± ``delta_p_err_pct``), ``delta_p_rms_pct``, ``flips``.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import KanibookError

__all__ = ["QuantReport", "machine_info"]

_FORMAT = "kanibook-quant-report"
_VERSION = 1


@dataclass
class QuantReport:
    """What :func:`kanibook.compare_quantization` measured. Displays itself in notebooks and prints as text.

    :param model: The model compared (a folder or a Hugging Face id).
    :param device: Where it ran.
    :param rows: One dict per setting (see the module's docstring for the keys).
    :param tokens: The reference text's tokens, as text.
    :param positions: Per setting: ``kl`` (per position), ``top`` (each position's top tokens with probabilities)
        and ``flips`` (``[position, reference top token id, setting top token id]``).
    :param answers: Per prompt: ``{"prompt": ..., "answers": {label: {"text", "token_ids", "diverges_at",
        "parts"}}}``; ``parts`` is the answer as ``[same as the reference, first different token, rest]``.
    :param machine: CPU / GPU, torch, transformers and bitsandbytes versions.
    :param start_memory_bytes: The memory reading before the first setting loaded.
    :param total_s: The whole comparison's duration.
    :param repeats: How many times each prompt was answered (after a warm-up) for the speed figures.
    :param layers: Inside the network, per setting against the reference (``compare_quantization(layers=...)``,
        :mod:`kanibook.layers.compare`); ``{}`` when not recorded. Drawn by :meth:`show_layers`.
    :param notes: Remarks on how it was measured (e.g. answers given as plain text to continue: no chat template).
    """

    model: str
    device: str
    rows: list[dict]
    tokens: list[str] = field(default_factory=list)
    positions: dict[str, dict] = field(default_factory=dict)
    answers: list[dict] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    start_memory_bytes: int | None = None
    total_s: float | None = None
    repeats: int | None = None
    layers: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> dict:
        """The reference's row."""
        return next(r for r in self.rows if r.get("reference"))

    def row(self, label: str) -> dict:
        """The row of one setting, by its label."""
        for r in self.rows:
            if r["label"] == label:
                return r
        raise KanibookError(f"No setting {label!r} in this report: use one of {', '.join(self.labels)}.")

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]

    def flips(self, label: str) -> list[tuple[int, str, str]]:
        """Where the top token flips under ``label``: ``(i, reference's top token, setting's top token)``, where
        ``i`` indexes :attr:`tokens`: the prediction of token ``i`` from ``tokens[:i]`` differs."""
        out = []
        for j, _, _ in self.positions.get(label, {}).get("flips", []):
            top = self.positions[label]["top"][j]
            ref_top = self.positions[self.reference["label"]]["top"][j]
            out.append((j + 1, ref_top[0][0], top[0][0]))
        return out

    def flip_details(self, label: str) -> list[dict]:
        """Each flip under ``label`` with what differs: both tokens' ids and texts, and the probability each side
        gives its own top token and (where it is among its top 3) the other side's, so that two tokens with the same
        text (``' it'`` and ``' it'``: two ids) or a near tie read as such. Keys: ``position`` (as in :meth:`flips`),
        ``ref_id``, ``ref_text``, ``id``, ``text``, ``same_text``, ``ref_p`` / ``ref_p_of_other`` (the reference's
        probabilities of its top token and of the setting's), ``p`` / ``p_of_ref`` (the setting's)."""
        ref_label = self.reference["label"]
        out = []
        for j, ref_id, top_id in self.positions.get(label, {}).get("flips", []):
            ref_top, top = self.positions[ref_label]["top"][j], self.positions[label]["top"][j]
            ref_text, text = ref_top[0][0], top[0][0]
            out.append({"position": j + 1, "ref_id": ref_id, "ref_text": ref_text, "id": top_id, "text": text,
                        "same_text": ref_text == text, "ref_p": ref_top[0][1], "ref_p_of_other": _p_of(ref_top, top_id),
                        "p": top[0][1], "p_of_ref": _p_of(top, ref_id)})  # fmt: skip
        return out
    def show_layers(self, label: str | None = None, **kwargs):
        """What each setting does inside the network: error against layer for every setting, a layers x tokens
        heatmap for ``label`` (default: the first quantized setting), the weight histogram, the outliers.

        :param kwargs: ``element_id`` for deterministic HTML; ``plots=False`` for the tables alone.
        """
        from ..layers.report_view import LayersReportView

        return LayersReportView.of(self, label, **kwargs)

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` indexed by label (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            from ..exceptions import MissingDependencyError

            raise MissingDependencyError("QuantReport.to_pandas() needs pandas: run  pip install pandas") from None
        return pd.DataFrame(self.rows).set_index("label")

    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": _VERSION, **asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON (atomically); :meth:`load` reads it back.

        :param path: The file to write.
        """
        from .._files import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1, allow_nan=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuantReport:
        """Read a report written by :meth:`save`.

        :param path: A JSON file from :meth:`save`.
        :raises KanibookError: when the file is missing or is not such a report.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise KanibookError(f"Could not read {os.fspath(path)!r} ({e.strerror}): pass a report saved with "
                                "report.save(path).") from None  # fmt: skip
        except ValueError:
            raise KanibookError(f"{os.fspath(path)!r} is not JSON: pass a report saved with report.save(path).") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise KanibookError(f"{os.fspath(path)!r} is not a kanibook quantization report (saved with report.save).")
        if data.get("version") != _VERSION:
            raise KanibookError(f"{os.fspath(path)!r} is a version {data.get('version')} report; this kanibook reads "
                                f"version {_VERSION}.")  # fmt: skip
        data.pop("format")
        data.pop("version")
        return cls(**data)

    def figure(self):
        """The plots (memory vs quality, memory vs speed) as a matplotlib ``Figure``."""
        from ..render.quant import report_figure

        return report_figure(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render import safe
        from ..render.quant import report_html, report_text

        notes = "".join(f"<div style='font-style:italic'>{safe.text(n)}</div>" for n in self.notes)
        return {"text/plain": str(self), "text/html": notes + report_html(self)}

    def __str__(self) -> str:
        from ..render.quant import report_text

        return "".join(f"note: {n}\n" for n in self.notes) + report_text(self)

    def __repr__(self) -> str:
        return f"<QuantReport {self.model!r} on {self.device}: {', '.join(self.labels)}>"


def _p_of(top: list, token_id: int) -> float | None:
    """The probability of ``token_id`` in a position's top list (``[text, p, id]`` entries), None if absent."""
    return next((t[1] for t in top if len(t) > 2 and t[2] == token_id), None)


def machine_info(device: str) -> dict[str, Any]:
    """What the comparison ran on: the device, the processor or GPU, and the versions that matter."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "device": "GPU" if str(device).startswith("cuda") else "CPU",
        "processor": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": _bitsandbytes_version(),
    }
    if info["device"] == "GPU":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bitsandbytes_version() -> str | None:
    try:
        import bitsandbytes
    except ImportError:
        return None
    return getattr(bitsandbytes, "__version__", "unknown")
