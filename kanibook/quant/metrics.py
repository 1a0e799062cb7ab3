"""Quality of a setting against the reference, from two teacher-forced scorings of the same tokens.

Both scorings come from :func:`kanibook.scoring.score_ids` with ``keep_full=True``: the full fp32 log-softmax at
every position. The statistics are those llama.cpp's ``perplexity --kl-divergence`` prints, with the same meaning:

- perplexity of each, their ratio, and the mean of ``ln(p_ref(token) / p_q(token))`` (llama.cpp's
  "Mean ln(PPL(Q)/PPL(base))") with its error;
- KL divergence ``KL(ref || q) = sum_v p_ref(v) (ln p_ref(v) - ln p_q(v))`` of the next-token distribution at each
  position: mean ± its standard error, median, 90/95/99th percentile (linear interpolation) and maximum;
- "same top p": the share of positions where both give the same most probable token, in %;
- Δp: ``p_q(actual next token) - p_ref(actual next token)``, in percentage points: mean ± error, and RMS.

Unlike llama.cpp, which stores the base logits as 16-bit integers (so tiny negative KLDs appear), the reference is
kept in fp32 exactly: a setting compared with itself gives 0, not "almost 0". Beyond how much, this module keeps
*where*: the KL of every position and the positions where the top token flips.

All the tensor work runs on kanibook's model thread (:func:`compare_scores`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Quality", "compare_scores", "mean_and_error"]


@dataclass
class Quality:
    """A setting's quality against the reference.

    :param stats: The summary figures (plain floats, keys as in the report's rows).
    :param kl: KL divergence at each scored position (aligned with ``token_ids[1:]``).
    :param flips: ``(position, reference top id, setting top id)`` wherever the most probable token differs.
    """

    stats: dict[str, float]
    kl: list[float] = field(default_factory=list)
    flips: list[tuple[int, int, int]] = field(default_factory=list)


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error, as llama.cpp computes them (``sqrt(var / (n - 1))``, 0 for one value)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = max(0.0, sum(v * v for v in values) / n - mean * mean)
    return mean, math.sqrt(var / (n - 1))


def compare_scores(reference, other) -> Quality:
    """Compare two :class:`~kanibook.scoring.TokenScores` of the same tokens (both with ``full_logprobs``).

    :param reference: The reference's scores.
    :param other: The setting's scores.
    :raises ValueError: if they are not scorings of the same tokens, or lack the full matrices.
    """
    if reference.token_ids != other.token_ids:
        raise ValueError("The two scorings are of different tokens.")
    if reference.full_logprobs is None or other.full_logprobs is None:
        raise ValueError("compare_scores needs score_ids(..., keep_full=True) on both sides.")
    from ..engine._model_thread import model_thread

    return model_thread().run(_compare, reference, other)


def _compare(reference, other) -> Quality:
    import torch

    ref, q = reference.full_logprobs, other.full_logprobs
    with torch.inference_mode():
        kl = (ref.exp() * (ref - q)).sum(-1).double()
        same = ref.argmax(-1) == q.argmax(-1)
        flip_positions = (~same).nonzero()[:, 0].tolist()
        ref_top, q_top = ref.argmax(-1).tolist(), q.argmax(-1).tolist()
        kl_sorted = kl.sort().values
        quantiles = torch.quantile(kl_sorted, torch.tensor([0.5, 0.9, 0.95, 0.99], dtype=torch.float64)).tolist()
    kl_list = kl.tolist()
    ref_lp, q_lp = reference.logprob, other.logprob
    dp = [100.0 * (math.exp(b) - math.exp(a)) for a, b in zip(ref_lp, q_lp)]
    ln_ratio = [a - b for a, b in zip(ref_lp, q_lp)]  # ln p_ref - ln p_q, mean = ln(PPL(Q) / PPL(ref))
    kl_mean, kl_err = mean_and_error(kl_list)
    dp_mean, dp_err = mean_and_error(dp)
    lr_mean, lr_err = mean_and_error(ln_ratio)
    ppl_ref, ppl = reference.perplexity, other.perplexity
    stats = {
        "ppl": ppl,
        "ppl_ratio": ppl / ppl_ref,
        "ln_ppl_ratio": lr_mean,
        "ln_ppl_ratio_err": lr_err,
        "kld_mean": kl_mean,
        "kld_err": kl_err,
        "kld_median": quantiles[0],
        "kld_p90": quantiles[1],
        "kld_p95": quantiles[2],
        "kld_p99": quantiles[3],
        "kld_max": max(kl_list),
        "same_top_pct": 100.0 * float(same.double().mean()),
        "delta_p_mean_pct": dp_mean,
        "delta_p_err_pct": dp_err,
        "delta_p_rms_pct": math.sqrt(sum(d * d for d in dp) / len(dp)),
        "flips": len(flip_positions),
        "positions": len(kl_list),
    }
    flips = [(i, ref_top[i], q_top[i]) for i in flip_positions]
    return Quality(stats=stats, kl=kl_list, flips=flips)
