"""The logit lens's parts: where a decoder keeps its blocks, final norm and output head, the residual stream after
every block (captured with hooks in one forward pass), and that stream read through the norm and head.

The residual stream is captured at the *input* of the first block (the embeddings, "layer 0") and at the output of
every block, before the final norm, so the lens at the last layer is exactly the model's own logits. Architectures
are recognised by where transformers keeps these parts (Llama, Qwen, Gemma, Mistral, Phi, GPT-2, GPT-NeoX, OPT
families); another gets one :class:`LensNotFound` line naming the part that was not found. What some models do between
the last norm and the logits is applied as they apply it: OPT's ``project_out`` (and no final norm where OPT normalises
after each block), Gemma's final logit soft-capping, Granite's logit divisor and Cohere's logit scale.

Everything here runs on kanibook's model thread (the callers in :mod:`.show` and :mod:`.compare` submit it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import KanibookError

__all__ = ["LensNotFound", "LensParts", "find_parts", "capture", "stream_hooks", "check_stream", "lens_logits",
           "lens_logprobs", "decoder_layers"]

# (blocks, final norm) paths, the first that exists wins
_PLACES = (
    ("model.layers", "model.norm"),  # Llama, Qwen, Mistral, Gemma, Phi-3
    ("model.language_model.layers", "model.language_model.norm"),  # Gemma 3, multimodal wrappers
    ("model.layers", "model.final_layernorm"),  # Phi-1/2
    ("transformer.h", "transformer.ln_f"),  # GPT-2, GPT-J
    ("gpt_neox.layers", "gpt_neox.final_layer_norm"),  # GPT-NeoX, Pythia
    ("model.decoder.layers", "model.decoder.final_layer_norm"),  # OPT
)


class LensNotFound(KanibookError):
    """The model's blocks, final norm or output head are not where transformers usually keeps them."""


@dataclass
class LensParts:
    """What the lens needs: the blocks (in order), the final norm (None: the model has none), the output head and
    the steps around the head (a projection before it; a soft cap, a divisor, a scale after it)."""

    layers: list
    norm: Any
    head: Any
    softcap: float | None = None
    logit_divisor: float | None = None
    project: Any = None
    logit_scale: float | None = None


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model) -> tuple[str, list] | None:
    """``(path, blocks)`` of a decoder's blocks, or None."""
    for layers_path, _ in _PLACES:
        layers = _get(model, layers_path)
        if layers is not None and len(layers) > 0:
            return layers_path, list(layers)
    return None


def find_parts(model) -> LensParts:
    """The lens's parts of ``model``, or :class:`LensNotFound` naming the part that is missing."""
    kind = type(model).__name__
    found = decoder_layers(model)
    if found is None:
        raise LensNotFound(f"The logit lens does not know {kind}: no decoder blocks at model.layers, transformer.h, "
                           "gpt_neox.layers or model.decoder.layers (it reads Llama, Qwen, Gemma, Mistral, Phi, GPT-2, "
                           "GPT-NeoX and OPT families).")  # fmt: skip
    layers_path, layers = found
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    norm = next((n for lp, np in _PLACES if lp == layers_path and (n := _get(model, np)) is not None), None)
    post_norm = getattr(config, "model_type", "") == "opt" and not getattr(config, "do_layer_norm_before", True)
    if norm is None and not post_norm:  # (OPT-350m normalises after each block and has no final norm)
        raise LensNotFound(f"The logit lens found {kind}'s blocks at {layers_path} but not its final norm (looked for "
                           "model.norm, model.final_layernorm, transformer.ln_f, gpt_neox.final_layer_norm, "
                           "model.decoder.final_layer_norm).")  # fmt: skip
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise LensNotFound(f"The logit lens found {kind}'s blocks and final norm but not its output head "
                           "(get_output_embeddings() returned nothing).")  # fmt: skip
    softcap = getattr(config, "final_logit_softcapping", None)
    divisor = getattr(config, "logits_scaling", None)
    scale = getattr(config, "logit_scale", None) if getattr(config, "model_type", "").startswith("cohere") else None
    project = _get(model, layers_path.rsplit(".", 1)[0] + ".project_out")  # OPT's projection to the embeddings' width
    return LensParts(layers, norm, head, float(softcap) if softcap else None, float(divisor) if divisor else None,
                     project, float(scale) if scale else None)  # fmt: skip


def stream_hooks(parts: LensParts, stream: list, inputs_hooks: list | None = None) -> list:
    """Hooks that fill ``stream`` (``len(parts.layers) + 1`` slots) with the residual stream of the next forward pass
    as fp32 CPU tensors ``[positions, hidden]`` (batch item 0): the first block's input, then each block's output.
    ``inputs_hooks``: ``(module, callback)`` pairs, ``callback(input_tensor)`` sees each module's input. Returns the
    handles (remove them after the pass)."""

    def first(_module, args, kwargs):
        h = args[0] if args else kwargs.get("hidden_states")
        stream[0] = h[0].detach().float().cpu()

    def after(i):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple | list) else output
            stream[i + 1] = h[0].detach().float().cpu()

        return hook

    handles = [parts.layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    handles += [block.register_forward_hook(after(i)) for i, block in enumerate(parts.layers)]
    for module, callback in inputs_hooks or []:
        handles.append(module.register_forward_pre_hook(lambda _m, args, cb=callback: cb(args[0])))
    return handles


def check_stream(model, stream: list) -> list:
    if not stream or any(s is None for s in stream):
        raise LensNotFound(f"The logit lens could not read {type(model).__name__}'s residual stream from its blocks.")
    return stream


def capture(model, parts: LensParts, input_ids, inputs_hooks: list | None = None):
    """One forward pass; returns ``(residuals, logits)``: the residual stream (see :func:`stream_hooks`), one tensor
    per layer (the embeddings first, then after each block), and the model's own logits (fp32 CPU)."""
    import torch

    stream: list = [None] * (len(parts.layers) + 1)
    handles = stream_hooks(parts, stream, inputs_hooks)
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            logits = model(input_ids=torch.as_tensor(input_ids).reshape(1, -1).to(device)).logits[0].float().cpu()
    finally:
        for h in handles:
            h.remove()
    return check_stream(model, stream), logits


def lens_logits(parts: LensParts, hidden):
    """The output head applied to the final norm of ``hidden`` (``[positions, hidden]``): fp32 logits on the CPU."""
    import torch

    weight = next((p for p in parts.norm.parameters()), None) if parts.norm is not None else None
    if weight is None:
        weight = next(parts.head.parameters())
    with torch.inference_mode():
        h = hidden.to(device=weight.device, dtype=weight.dtype if weight.is_floating_point() else hidden.dtype)
        normed = parts.norm(h) if parts.norm is not None else h
        if parts.project is not None:
            normed = parts.project(normed)
        head_w = next(parts.head.parameters())
        if head_w.is_floating_point():
            normed = normed.to(head_w.dtype)
        logits = parts.head(normed).float()
        if parts.logit_scale:
            logits = logits * parts.logit_scale
        if parts.logit_divisor:
            logits = logits / parts.logit_divisor
        if parts.softcap:
            logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits.cpu()


def lens_logprobs(parts: LensParts, hidden):
    """``log_softmax`` of :func:`lens_logits`, fp32."""
    import torch

    return torch.log_softmax(lens_logits(parts, hidden), dim=-1)
