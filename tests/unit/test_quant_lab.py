"""The quantization lab on the real demo model on a CPU: metrics from real runs, memory released, the report's
round trip, rendering of hostile text, the recommendation, the magic's usage errors, and a setting that cannot run."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap

import pytest

from kanibook.exceptions import KanibookError
from tests._html import parse_html

PROMPTS = ["What is the capital of France?"]


@pytest.fixture(scope="module")
def report(demo_model_dir):
    """One comparison: the reference, fp32 loaded a second time, nf4, and a user's BitsAndBytesConfig."""
    import torch
    from transformers import BitsAndBytesConfig

    import kanibook

    mine = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)  # fmt: skip
    settings = ["fp32", ("fp32 again", "fp32"), "nf4", ("my nf4-dq", mine)]
    return kanibook.compare_quantization(demo_model_dir, settings, prompts=PROMPTS, max_new_tokens=8, progress=False)


def test_every_setting_ran_and_the_reference_comes_first(report):
    assert report.labels == ["fp32", "fp32 again", "nf4", "my nf4-dq"]
    assert report.reference["label"] == "fp32" and report.device == "cpu"
    for row in report.rows:
        assert row["available"] and row["reason"] is None
        for key in ("weights_bytes", "weights_estimate_bytes", "peak_memory_bytes", "load_s", "ttft_s",
                    "decode_tok_s", "ppl", "kld_mean", "same_top_pct"):  # fmt: skip
            assert row[key] is not None and row[key] >= 0, (row["label"], key)
    assert report.row("my nf4-dq")["preset"] == "nf4-dq"


def test_a_setting_against_itself_changes_nothing(report):
    ref = report.reference
    assert ref["kld_mean"] == 0.0 and ref["kld_max"] == 0.0  # the same fp32 matrix: exactly 0
    assert ref["same_top_pct"] == 100.0 and ref["delta_p_mean_pct"] == 0.0 and ref["delta_p_rms_pct"] == 0.0
    assert ref["ppl_ratio"] == 1.0 and ref["flips"] == 0
    again = report.row("fp32 again")  # a second, independent load and forward pass
    assert again["kld_max"] == pytest.approx(0.0, abs=1e-6)
    assert again["same_top_pct"] == 100.0 and again["ppl"] == pytest.approx(ref["ppl"], rel=1e-6)


def test_4bit_costs_quality_and_saves_memory(report):
    ref, nf4 = report.reference, report.row("nf4")
    assert nf4["kld_mean"] > 1e-3 and nf4["kld_max"] >= nf4["kld_p99"] >= nf4["kld_p95"] >= nf4["kld_p90"]
    assert nf4["kld_p90"] >= nf4["kld_median"] >= 0 and nf4["kld_err"] > 0
    assert nf4["same_top_pct"] < 100.0 and nf4["flips"] == len(report.flips("nf4")) > 0
    assert nf4["delta_p_rms_pct"] > abs(nf4["delta_p_mean_pct"]) - 1e-9
    assert nf4["weights_bytes"] < 0.4 * ref["weights_bytes"]
    for row in report.rows:  # the measured weights match the estimate made from the config alone
        assert row["weights_bytes"] == pytest.approx(row["weights_estimate_bytes"], rel=0.02), row["label"]


def test_the_reference_perplexity_agrees_with_the_models_own_loss(report, demo_model_dir):
    import torch

    import kanibook

    demo_engine = kanibook.load(demo_model_dir, quant="fp32")  # the lab's reference is fp32 (not the default dtype)

    from kanibook.engine._model_thread import model_thread
    from kanibook.quant.texts import REFERENCE_TEXT

    ids = torch.tensor([demo_engine.tokenizer(REFERENCE_TEXT)["input_ids"]])

    def loss():
        with torch.no_grad():
            return demo_engine.model(input_ids=ids, labels=ids).loss.item()

    assert report.reference["ppl"] == pytest.approx(math.exp(model_thread().run(loss)), rel=1e-4)
    assert len(report.tokens) == ids.shape[1] and len(report.positions["nf4"]["kl"]) == ids.shape[1] - 1


def test_metrics_follow_llama_cpp_definitions(report):
    from kanibook.quant.metrics import mean_and_error

    mean, err = mean_and_error([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and err == pytest.approx(math.sqrt((7.5 - 6.25) / 3))
    kl = report.positions["nf4"]["kl"]
    assert report.row("nf4")["kld_mean"] == pytest.approx(sum(kl) / len(kl))
    assert report.row("nf4")["kld_max"] == max(kl) and min(kl) >= -1e-6


def test_answers_are_side_by_side_with_the_first_difference(report):
    entry = report.answers[0]
    assert entry["prompt"] == PROMPTS[0] and set(entry["answers"]) == set(report.labels)
    ref = entry["answers"]["fp32"]
    assert ref["diverges_at"] is None and ref["text"] and 0 < len(ref["token_ids"]) <= 8
    for label, a in entry["answers"].items():
        same, first, rest = a["parts"]
        assert (same + first + rest).strip() == a["text"].strip()
        k = a["diverges_at"]
        if k is None:
            assert a["token_ids"] == ref["token_ids"]
        else:
            assert a["token_ids"][:k] == ref["token_ids"][:k] and a["token_ids"][: k + 1] != ref["token_ids"][: k + 1]


def test_speed_is_the_median_of_repeated_answers_after_a_warm_up(report):
    assert report.repeats == 2  # the default
    for row in report.rows:
        assert row["speed_answers"] == report.repeats * len(PROMPTS), row["label"]
        assert 0 < row["peak_added_bytes"] <= row["peak_memory_bytes"]
        assert row["memory_before_load_bytes"] + row["peak_added_bytes"] == row["peak_memory_bytes"]
    text = str(report)
    assert f"medians over {report.repeats * len(PROMPTS)} answers per setting" in text and "peak added" in text


def test_speed_figures_are_medians_and_the_peak_the_largest():
    from kanibook.quant.measure import speed

    def stats(rate, ttft, peak):
        return {"tokens_per_second": rate, "time_to_first_token_s": ttft, "peak_memory_bytes": peak,
                "memory_kind": "process"}  # fmt: skip

    answers = [{"stats": stats(1.0, 9.0, 500), "runs": [stats(1.0, 9.0, 500), stats(10.0, 0.2, 700)]},
               {"stats": stats(11.0, 0.3, 600), "runs": [stats(11.0, 0.3, 600), stats(12.0, 0.1, 650)]}]  # fmt: skip
    out = speed(answers, before_load=400)
    assert out["decode_tok_s"] == 10.5 and out["ttft_s"] == 0.25  # one slow answer does not decide them
    assert out["peak_memory_bytes"] == 700 and out["peak_added_bytes"] == 300 and out["speed_answers"] == 4


def test_the_compute_dtype_actually_used_is_recorded(report):
    assert report.reference["compute_dtype"] == "float32"
    mine = report.row("my nf4-dq")["compute_dtype"]  # asked for float32
    # bitsandbytes' AVX512-BF16 CPU kernel multiplies in bfloat16 whatever compute_dtype says, and the row says so
    assert mine == "float32" or (mine.startswith("bfloat16 (bitsandbytes'") and "float32 not used" in mine), mine
    assert "Computed in: fp32 float32" in str(report)


def test_a_flip_between_two_tokens_with_one_text_shows_what_differs(report):
    """' it'→' it' read as "a token flipped to itself": the ids and both sides' probabilities must show."""
    from kanibook.render.quant import report_html, report_text

    evil = copy.deepcopy(report)
    j, ref_id, top_id = evil.positions["nf4"]["flips"][0]
    ref_top, top = evil.positions["fp32"]["top"][j], evil.positions["nf4"]["top"][j]
    top[0][0] = ref_top[0][0]  # the setting's top token now reads like the reference's
    flip = evil.flip_details("nf4")[0]
    assert flip["same_text"] and (flip["ref_id"], flip["id"]) == (ref_id, top_id) and ref_id != top_id
    assert flip["ref_p"] == ref_top[0][1] and flip["p"] == top[0][1]
    line = next(line for line in report_text(evil).splitlines() if line.startswith("top-token flips under nf4"))
    assert f"#{ref_id}" in line and f"#{top_id}" in line and "one text, two ids" in line
    assert f"#{ref_id}" in report_html(evil, plots=False)


def test_memory_is_released_between_settings(report):
    weights = report.reference["weights_bytes"]
    after = [r["memory_after_release_bytes"] for r in report.rows]
    assert all(a - report.start_memory_bytes < 0.5 * weights for a in after), (report.start_memory_bytes, after)
    assert after[-1] - after[0] < 0.25 * weights  # four settings, no model left behind


def test_a_released_model_is_really_freed(demo_model_dir):
    """The check above can fail: a model still referenced keeps the memory up (and the lab drops every reference)."""
    import weakref

    import kanibook
    from kanibook.quant.lab import memory_now, release_memory

    release_memory("cpu")
    start = memory_now("cpu")
    engine = kanibook.load(demo_model_dir, quant="fp32")  # 538 MB of weights (the default dtype may be bf16)
    from kanibook.scoring import score_ids

    score_ids(engine.model, list(range(1, 40)))  # pages the weights in
    kept = engine.model
    ref = weakref.ref(kept)
    del engine
    release_memory("cpu")
    assert ref() is not None and memory_now("cpu") - start > 0.5 * 538e6  # still held: not released
    del kept
    release_memory("cpu")
    assert ref() is None and memory_now("cpu") - start < 0.3 * 538e6


def test_save_and_load_round_trip(report, tmp_path):
    from kanibook import QuantReport

    path = report.save(tmp_path / "lab.json")
    loaded = QuantReport.load(path)
    assert loaded.rows == json.loads(json.dumps(report.rows))
    assert loaded.positions["nf4"]["kl"] == report.positions["nf4"]["kl"] and loaded.answers == report.answers
    assert str(loaded) == str(report) and loaded.flips("nf4") == report.flips("nf4")
    (tmp_path / "other.json").write_text('{"rows": []}')
    with pytest.raises(KanibookError, match="not a kanibook quantization report"):
        QuantReport.load(tmp_path / "other.json")
    with pytest.raises(KanibookError, match="Could not read"):
        QuantReport.load(tmp_path / "missing.json")


def test_the_report_displays_with_the_best_marked(report):
    bundle = report._repr_mimebundle_()
    text, html = bundle["text/plain"], bundle["text/html"]
    assert "Measured on CPU" in text and "torch" in text and "bitsandbytes" in text
    assert "Memory after each release (process RSS):" in text and "after fp32 " in text and "kb-quant-release" in html
    assert "data:image/png;base64," in html and "kb-quant-table" in html
    best_kl = min((r for r in report.rows if not r["reference"]), key=lambda r: r["kld_mean"])["label"]
    row_html = next(part for part in html.split("<tr>") if part.startswith('<td style') and f">{best_kl}<" in part)
    assert '<strong class="kb-best">' in row_html
    assert html.count("<details class='kb-quant-strip'>") == 3  # every setting but the reference
    assert 'class="kb-diverge"' in html or all(
        a["diverges_at"] is None for e in report.answers for a in e["answers"].values()
    )
    figure = report.figure()
    assert [ax.get_title() for ax in figure.axes] == ["memory vs quality", "memory vs speed"]


def test_pandas_missing_says_how_to_install(report, monkeypatch):
    from kanibook.exceptions import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingDependencyError, match="pip install pandas"):
        report.to_pandas()


def test_pandas_when_installed(report):
    pd = pytest.importorskip("pandas")
    frame = report.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == report.labels


def test_hostile_strings_stay_text(report, hostile):
    from kanibook.render.quant import report_html

    evil = copy.deepcopy(report)
    evil.rows[2]["label"] = hostile
    evil.rows[3].update(available=False, reason=hostile)
    evil.positions[hostile] = evil.positions.pop("nf4")
    evil.tokens[5] = hostile
    evil.answers[0]["prompt"] = hostile
    evil.answers[0]["answers"]["nf4"]["parts"] = [hostile, hostile, hostile]
    evil.model = hostile
    html = report_html(evil, plots=False)
    parsed = parse_html(html)
    assert {tag for tag, _ in parsed.tags} <= {"div", "table", "thead", "tbody", "tr", "th", "td", "em", "strong",
                                                "details", "summary", "span", "mark", "br", "wbr"}  # fmt: skip
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert "\u202e" not in html and "\x00" not in html and "\x1b" not in html
    from kanibook.render.safe import clean_chars

    assert f"unavailable: {clean_chars(hostile)}" in "".join(parsed.text)  # shown as text, exactly
    assert "\u202e" not in str(evil)


def test_recommend_fits_the_memory_and_says_why(demo_model_dir, report):
    import kanibook

    by_bits = kanibook.recommend_quant(demo_model_dir, memory="300 MB", context_length=512, report=None)
    assert by_bits.ranked_by in {"bits", "measured"}
    plain = kanibook.recommend_quant(demo_model_dir, memory=300e6, context_length=512, report=_empty_report(report))
    assert plain.ranked_by == "bits" and plain.preset == "int8"  # fp32 and bf16 do not fit 300 MB, int8 does
    assert "int8" in plain.reason and "MB" in plain.reason and "bf16 would need" in plain.reason
    fits = {c["preset"]: c["fits"] for c in plain.candidates}
    assert fits["fp32"] is False and fits["nf4"] is True
    measured = kanibook.recommend_quant(demo_model_dir, memory="300MB", context_length=512, report=report)
    assert measured.ranked_by == "measured" and measured.preset in {"nf4", "nf4-dq"}
    nothing = kanibook.recommend_quant(demo_model_dir, memory="10 MB", context_length=512)
    assert nothing.preset is None and nothing.reason.startswith("Nothing fits")
    with pytest.raises(KanibookError, match="not a size"):
        kanibook.recommend_quant(demo_model_dir, memory="lots")
    assert "✓" in str(plain) and "kb-quant-recommend" in plain._repr_mimebundle_()["text/html"]


def _empty_report(report):
    empty = copy.deepcopy(report)
    for r in empty.rows:
        r["available"] = False
    return empty


def test_settings_are_checked_before_anything_loads():
    from kanibook.quant.settings import default_settings, resolve_settings

    with pytest.raises(KanibookError, match=r"Unknown setting 'nf3': use one of fp32, bf16, fp16, int8"):
        resolve_settings("fp32,nf3", "cpu")
    with pytest.raises(KanibookError, match="listed twice"):
        resolve_settings(["nf4", "nf4"], "cpu")
    assert [s.label for s in resolve_settings("nf4", "cpu")] == ["fp32", "nf4"]  # the reference is added first
    assert [s.label for s in resolve_settings("nf4,bf16", "cuda")] == ["bf16", "nf4"]
    assert "fp16" not in default_settings("cpu") and default_settings("cuda")[:2] == ["bf16", "fp16"]


def test_magic_usage_errors(ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as info:
        ip.run_line_magic("kani", "quant --settings fp32,nf3")
    message = str(info.value)
    assert "\n" not in message and "nf3" in message and "fp32,bf16,fp16,int8,nf4,nf4-dq,fp4,fp4-dq" in message
    with pytest.raises(UsageError, match="--settings belongs to %kani quant"):
        ip.run_line_magic("kani", "memory --settings nf4")
    with pytest.raises(UsageError, match="takes one MODEL"):
        ip.run_line_magic("kani", "quant a b")


def test_the_magic_runs_a_comparison(ip, demo_model_dir):
    from kanibook import QuantReport

    result = ip.run_line_magic("kani", f"quant {demo_model_dir} --settings FP32")
    assert isinstance(result, QuantReport) and result.labels == ["fp32"] and result.reference["kld_mean"] == 0.0
    assert result.model == str(demo_model_dir)


_NO_BNB = textwrap.dedent(
    """
    import json, sys
    sys.modules["bitsandbytes"] = None  # installed, but unimportable in this process
    import kanibook
    r = kanibook.compare_quantization(settings="fp32,bf16,nf4,int8", prompts=["Hi"], max_new_tokens=2,
                                      reference_text="Bread needs time, heat and patience.", progress=False)
    print(json.dumps(r.rows))
    """
)


def test_a_setting_the_machine_cannot_run_is_a_row_with_the_reason():
    out = subprocess.run([sys.executable, "-c", _NO_BNB], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["label"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    for label in ("nf4", "int8"):
        assert not rows[label]["available"] and rows[label]["kld_mean"] is None if "kld_mean" in rows[label] else True
        assert "bitsandbytes" in rows[label]["reason"] and "pip install" in rows[label]["reason"]
    for label in ("fp32", "bf16"):
        assert rows[label]["available"] and rows[label]["reason"] is None
        assert rows[label]["weights_bytes"] > 0 and rows[label]["kld_mean"] is not None
    assert rows["bf16"]["kld_mean"] > 0


def test_the_package_stays_light():
    probe = "import sys, kanibook.quant, json; print(json.dumps(sorted(m for m in ('torch', 'transformers', " \
            "'bitsandbytes') if m in sys.modules)))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip()) == []


@pytest.mark.gpu
def test_a_comparison_on_cuda(tmp_path):
    """A random-weight Llama built from a config (no weights travel to a GPU machine), bf16 reference on CUDA."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import kanibook
    from tests.unit.conftest import LLAMA2_TEMPLATE, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(["<unk>", "<s>", "</s>"], LLAMA2_TEMPLATE, bos="<s>", eos="</s>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, dtype="float32")  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    r = kanibook.compare_quantization(tmp_path, "bf16,fp16,nf4,int8", prompts=PROMPTS, max_new_tokens=8,
                                      progress=False)  # fmt: skip
    assert r.device == "cuda" and r.reference["label"] == "bf16" and r.reference["kld_mean"] == 0.0
    assert all(row["available"] for row in r.rows), [row["reason"] for row in r.rows]
    assert all(row["memory_kind"] == "cuda" for row in r.rows)
    assert r.row("nf4")["kld_mean"] > 0 and r.row("nf4")["weights_bytes"] < r.reference["weights_bytes"]
    weights = r.reference["weights_bytes"]
    assert all(row["memory_after_release_bytes"] - r.start_memory_bytes < 0.1 * weights for row in r.rows)
    assert r.machine["device"] == "GPU" and r.machine["gpu"]


def test_the_native_gguf_row_runs_the_models_own_file_in_llama_cpp(demo_model_dir):
    """llama.cpp's Q4_1 (the file the embedded model came from) beside bitsandbytes, on the same reference text."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'kanibook[llamacpp]')")
    import kanibook
    from kanibook.demo_model import demo_gguf_path

    report = kanibook.compare_quantization(demo_model_dir, "fp32,gguf", prompts=PROMPTS[:1], max_new_tokens=6,
                                           progress=False)  # fmt: skip
    ref, native = report.reference, report.row("gguf (llama.cpp)")
    assert native["available"] and native["reason"] is None, native["reason"]
    assert native["weights_bytes"] == demo_gguf_path().stat().st_size < 0.25 * ref["weights_bytes"]
    # the "fp32" reference is this very file dequantized: llama.cpp's own arithmetic differs only a little
    assert 0 < native["kld_mean"] < 0.05 and native["ppl"] == pytest.approx(ref["ppl"], rel=0.05)
    assert native["same_top_pct"] > 85 and native["decode_tok_s"] > 0
    assert len(report.answers[0]["answers"]["gguf (llama.cpp)"]["token_ids"]) > 0


def test_the_native_row_of_a_model_without_a_gguf_file_says_why(tiny_llama2_dir):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    import kanibook

    report = kanibook.compare_quantization(tiny_llama2_dir, "fp32,gguf", prompts=PROMPTS[:1], max_new_tokens=2,
                                           reference_text="Hello world! How are you today?", progress=False)  # fmt: skip
    assert "no GGUF file for this model" in report.row("gguf (llama.cpp)")["reason"]
