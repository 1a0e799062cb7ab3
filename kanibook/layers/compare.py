"""The lab's side of the layers: for every setting, what quantization does inside the network, against the reference.

:class:`LayerRecorder` is driven by :mod:`kanibook.quant.lab` (one call per loaded setting, on the model thread):

- the **reference** (first): its residual stream on the reference text is kept (``layers + 1`` x ``tokens`` x
  ``hidden`` floats, as the lab keeps its logits), with a CPU copy of its final norm and head (its lens); its
  **activations**: per block and linear layer, the input dimensions that reach LLM.int8's outlier threshold (6.0)
  on the text (how many, how large: the part int8 keeps in 16 bits); the weights' tail ratios and one histogram;
- **every setting**: each linear layer's weight error against the reference's (read from its safetensors files);
  the residual stream after each layer against the reference's (relative error and cosine, per layer and token);
  each layer's lens distribution against the reference's lens at the same layer (KL, same top token); for each
  position whose final top token flips, the layer from which the two stay apart.

Only these summaries go into the report (``QuantReport.layers``), never a setting's hidden states.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .lens import LensNotFound, check_stream, decoder_layers, find_parts, lens_logprobs, stream_hooks
from .show import layer_names
from .weights import ReferenceWeights, block_and_kind, dequantized_linears, histogram, tail_ratio, weight_summary

__all__ = ["LayerRecorder", "lab_capture", "lab_record", "OUTLIER_THRESHOLD", "outlier_hooks", "NO_HIDDEN_STATES"]

OUTLIER_THRESHOLD = 6.0  # LLM.int8's default (transformers' llm_int8_threshold)
NO_HIDDEN_STATES = "llama.cpp runs this GGUF natively and exposes no hidden states: nothing to compare inside."
_DIGITS = 5
LENS_TOP = 512  # the reference lens keeps its top 512 tokens per layer and position; the rest is one bin


def _r(values, digits: int = _DIGITS) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


def _t(values) -> list[float]:
    """Per-token figures: 3 significant digits (a report keeps layers x tokens of them per setting)."""
    return _r(values, 3)


def outlier_hooks(model, blocks_path: str, threshold: float = OUTLIER_THRESHOLD) -> tuple[list, dict]:
    """``(hooks, found)``: pre-hooks for :func:`.lens.capture` on every linear layer in the blocks; after the pass
    ``found[name]`` is ``{"dims": [...], "max": float}``: the input dimensions whose magnitude reaches ``threshold``
    at some token, and the largest magnitude seen."""
    import torch

    found: dict[str, dict] = {}
    hooks = []
    for name, module in model.named_modules():
        if not name.startswith(blocks_path + ".") or not isinstance(module, torch.nn.Linear):
            continue

        def seen(x, name=name):
            mags = x.detach().float().abs().reshape(-1, x.shape[-1]).amax(dim=0)
            found[name] = {"dims": torch.nonzero(mags >= threshold).flatten().tolist(), "max": float(mags.max())}

        hooks.append((module, seen))
    return hooks, found


class LayerRecorder:
    """The layers' comparison during one lab run (see the module's docstring)."""

    def __init__(self, path: Any, token_ids: list[int]):
        self.path, self.ids = path, list(token_ids)
        self.ref_stream = None
        self.ref_lens = None  # per layer: the reference lens's top LENS_TOP ids, their log-probs, the rest's mass
        self.ref_weights = None
        self.data: dict[str, Any] = {"settings": {}}

    def record(self, model, label: str, reference: bool, captured: dict) -> dict:
        """On the model thread: the summaries of one loaded setting (the reference first), from what
        :func:`lab_capture` read during the lab's quality pass. Returns its entry."""
        entry: dict[str, Any] = {}
        self.data["settings"][label] = entry
        if "error" in captured:
            raise LensNotFound(captured["error"])
        parts, stream, outliers = captured["parts"], check_stream(model, captured["stream"]), captured["outliers"]
        blocks_path, _ = decoder_layers(model)
        if reference:
            self._keep_reference(model, parts, stream, blocks_path, outliers)
        entry.update(self._through(parts, stream))
        entry["weights"] = self._weights(model, blocks_path)
        return entry

    def unavailable(self, label: str, reason: str) -> None:
        self.data["settings"][label] = {"unavailable": reason}

    def close(self) -> dict:
        """Drop the kept reference (its hidden states and lens) and return the report's ``layers`` data."""
        self.ref_stream = self.ref_lens = None
        return self.data

    # ---- the reference ------------------------------------------------------------------------------------------

    def _keep_reference(self, model, parts, stream, blocks_path: str, outliers: dict) -> None:
        import time

        start = time.perf_counter()
        self.ref_stream = stream
        self.ref_lens = [_sparse(lens_logprobs(parts, h[: len(self.ids) - 1])) for h in stream]
        self.data["reference_lens_s"] = round(time.perf_counter() - start, 3)  # paid once, by the reference
        self.ref_weights = ReferenceWeights(self.path)
        self.data["layer_names"] = layer_names(len(stream))
        self.data["threshold"] = OUTLIER_THRESHOLD
        self.data["outliers"] = _outlier_rows(outliers)
        quantized = dequantized_linears(model, blocks_path)
        tails = [{"name": n, "tail_ratio": tail_ratio(w)} for n, w in quantized.items()]
        self.data["tails"] = tails
        if tails:
            worst = max(tails, key=lambda t: t["tail_ratio"])["name"]
            self.data["histogram"] = histogram(worst, quantized[worst])
        if not self.ref_weights:
            self.data["weights_note"] = "The reference's safetensors files were not found: no weight errors."

    # ---- every setting ------------------------------------------------------------------------------------------

    def _through(self, parts, stream) -> dict:
        import torch

        n = len(self.ids) - 1  # positions that predict a token of the text (as the lab's quality figures)
        rel, cos, kl, same, top1 = [], [], [], [], []
        for layer, (ref_h, h) in enumerate(zip(self.ref_stream, stream)):
            ref_h, h = ref_h[:n], h[:n]
            rel.append((h - ref_h).norm(dim=-1) / ref_h.norm(dim=-1).clamp_min(1e-30))
            cos.append(torch.nn.functional.cosine_similarity(h, ref_h, dim=-1))
            lp = lens_logprobs(parts, h)
            ref_ids, ref_lp, ref_tail = self.ref_lens[layer]
            kl.append(lumped_kl(ref_lp, ref_tail, lp.gather(-1, ref_ids.long())))
            top = lp.topk(1, dim=-1).indices[:, 0]  # as the reference's (topk), so ties break alike
            same.append((ref_ids[:, 0].long() == top).float())
            top1.append(top.tolist())
            del lp
        ref_top1 = [layer[0][:, 0].tolist() for layer in self.ref_lens]
        return {
            "rel_error": [_t(r.tolist()) for r in rel],
            "cosine": [_t(c.tolist()) for c in cos],
            "kl": [_t(k.tolist()) for k in kl],
            "rel_error_mean": _r(float(r.mean()) for r in rel),
            "cosine_mean": _r(float(c.mean()) for c in cos),
            "kl_mean": _r(float(k.mean()) for k in kl),
            "same_top_pct": _r(100.0 * float(s.mean()) for s in same),
            "flip_layers": flip_layers(ref_top1, top1),
        }

    def _weights(self, model, blocks_path: str) -> dict:
        if not self.ref_weights:
            return {}
        rows = weight_summary(dequantized_linears(model, blocks_path), self.ref_weights)
        per_block: dict[int, list[float]] = {}
        per_kind: dict[str, list[float]] = {}
        for row in rows:
            per_block.setdefault(row["block"], []).append(row["rel_error"])
            per_kind.setdefault(row["kind"], []).append(row["rel_error"])
        return {
            "modules": {r["name"]: float(f"{r['rel_error']:.{_DIGITS}g}") for r in rows},
            "per_block": {str(b): _mean(v) for b, v in sorted(per_block.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
            "per_kind": {k: _mean(v) for k, v in per_kind.items()},
        }


def _sparse(logp):
    """``(top ids, their log-probs, the rest's probability mass)`` of ``[positions, vocab]`` log-probs."""
    import torch

    top = logp.topk(min(LENS_TOP, logp.shape[-1]), dim=-1)
    tail = (1.0 - top.values.double().exp().sum(-1)).clamp_min(0.0)
    return top.indices.int(), top.values, tail


def lumped_kl(ref_logp, ref_tail, logp_at_ref):
    """KL(reference || setting) over the reference's top tokens with every other token in one bin: the exact KL of
    the two distributions so coarsened: zero when the two are the same, never above the full KL, and about 95% of
    it on the embedded model's final layer under int8 (92% with the top 256, 97% with 1,024: measured)."""
    import torch

    p, lp = ref_logp.double(), logp_at_ref.double()
    head = (p.exp() * (p - lp)).sum(-1)
    q_tail = (1.0 - lp.exp().sum(-1)).clamp_min(1e-300)
    tail = torch.where(ref_tail > 0, ref_tail * (ref_tail.clamp_min(1e-300).log() - q_tail.log()), 0.0)
    return (head + tail).clamp_min(0.0).float()


def flip_layers(ref_top1: list[list[int]], top1: list[list[int]]) -> list[list[int]]:
    """``[position, layer]`` for every position whose final top token differs from the reference's: the first layer
    from which the two lenses' top tokens differ at every later layer."""
    out = []
    last = len(top1) - 1
    for p in range(len(top1[-1])):
        if top1[-1][p] == ref_top1[-1][p]:
            continue
        layer = last
        while layer > 0 and top1[layer - 1][p] != ref_top1[layer - 1][p]:
            layer -= 1
        out.append([p, layer])
    return out


def _mean(values: list[float]) -> float:
    return float(f"{sum(values) / len(values):.{_DIGITS}g}")


def _outlier_rows(found: dict[str, dict]) -> list[dict]:
    """Per module (in order): block, kind, how many dimensions reach the threshold, the largest magnitude, the
    dimensions (at most 12, largest first is not known: in index order)."""
    rows = []
    for name, f in found.items():
        block, kind = block_and_kind(name)
        rows.append({"name": name, "block": block, "kind": kind, "count": len(f["dims"]),
                     "max": float(f"{f['max']:.4g}"), "dims": f["dims"][:12]})  # fmt: skip
    return rows


__all__ += ["flip_layers", "LensNotFound"]


def _native(setting, engine) -> bool:
    """The model's own GGUF run by llama.cpp (the lab's ``NativeGGUF`` setting), or an engine without a torch model."""
    quant = getattr(setting, "quant", None)
    return type(quant).__name__ == "NativeGGUF" or getattr(setting, "preset", None) == "gguf" or not hasattr(
        getattr(engine, "model", None), "named_modules")


def _wanted(lab, engine, setting) -> bool:
    if lab.layers is False or _native(setting, engine):
        return False
    if lab.recorder is None:
        return bool(setting.reference)
    return not lab.recorder.data.get("off")


@contextlib.contextmanager
def lab_capture(lab, engine, setting):
    """Around the lab's quality pass: hooks read the residual stream (and, for the reference, the linear layers'
    inputs), so the layers cost no forward pass of their own. Yields the dict :func:`lab_record` reads."""
    captured: dict[str, Any] = {}
    if not _wanted(lab, engine, setting):
        yield captured
        return
    model = engine.model
    try:
        parts = find_parts(model)
    except LensNotFound as e:
        captured["error"] = str(e)
        yield captured
        return
    blocks_path, _ = decoder_layers(model)
    hooks, outliers = outlier_hooks(model, blocks_path) if setting.reference else ([], {})
    stream: list = [None] * (len(parts.layers) + 1)
    captured.update(parts=parts, stream=stream, outliers=outliers)
    handles = stream_hooks(parts, stream, hooks)
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def lab_record(lab, engine, setting, row: dict, captured: dict) -> None:
    """The lab's layers step for one loaded setting (``lab``: the lab's state, with ``layers`` True / None (auto) and
    ``recorder``). A failure becomes the setting's ``unavailable`` line; the setting's other figures stand.

    Auto (``layers=None``): judged at the reference, before its pass (:func:`_judge_default`).
    """
    import time

    from ..engine._model_thread import model_thread

    if lab.layers is False or (lab.recorder is None and not setting.reference):
        return
    if lab.recorder is None:
        lab.recorder = LayerRecorder(lab.path, lab.tokenizer(lab.text)["input_ids"])
    recorder = lab.recorder
    if recorder.data.get("off"):
        return
    off = _judge_default(lab, engine, setting, row) if not _native(setting, engine) else None
    if off:
        recorder.data["off"] = off
        return
    if _native(setting, engine):
        recorder.unavailable(setting.label, NO_HIDDEN_STATES)
        return
    start = time.perf_counter()
    try:
        model_thread().run(recorder.record, engine.model, setting.label, setting.reference, captured)
    except Exception as e:  # noqa: BLE001 - one line in the layers' view; the setting's row stands
        recorder.unavailable(setting.label, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        if setting.reference:
            recorder.data["off"] = recorder.data["settings"][setting.label]["unavailable"]
        return
    spent = time.perf_counter() - start
    recorder.data["settings"][setting.label]["seconds"] = round(spent, 3)


def _judge_default(lab, engine, setting, row: dict) -> str | None:
    """``layers=None``: before the reference's pass, why it should be off (None: keep it on). Each later setting pays
    one lens pass: (layers + 1) x vocabulary x hidden multiply-adds per token, against the quality pass's ~parameters
    per token, so its cost is the measured quality pass scaled by that ratio; it must stay under a third of what the
    lab spends on a setting (the reference's load, quality and answers, measured)."""
    if lab.layers is not None or not setting.reference:
        return None
    lab_s = sum(row.get(k) or 0.0 for k in ("load_s", "quality_s", "answers_s"))
    estimate = (row.get("quality_s") or 0.0) * lens_cost_ratio(engine.model)
    if estimate <= lab_s / 3:
        return None
    return (f"the layers pass would add about {estimate:.1f} s to each setting's {lab_s:.1f} s (more than a third): off "
            "by default here; pass layers=True to record it.")


def lens_cost_ratio(model) -> float:
    """The logit lens at every layer over one forward pass, in multiply-adds (a transformers model)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    params = sum(p.numel() for p in model.parameters()) or 1
    return (layers + 1) * getattr(config, "vocab_size", 0) * hidden / params
