"""kanibook.estimate_memory: weights for every preset and the KV cache, from a config alone, against measurements."""

from __future__ import annotations

import dataclasses
import gc
import importlib
import shutil

import pytest

import kanibook
from kanibook.exceptions import KanibookError
from kanibook.render import memory as render
from kanibook.render import safe

kmem = importlib.import_module("kanibook.memory_view")


def assert_inert(html_out: str, hostile: str) -> None:
    """Only layout elements, no event handlers, no raw hostile string, no control characters."""
    from html.parser import HTMLParser

    tags: list[tuple[str, dict]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))

    Collector().feed(html_out)
    assert {t for t, _ in tags} <= {"div", "span", "table", "tr", "th", "td"}, tags
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert not any(c in html_out for c in ("\x00", "\u202e", "\u2066", "\x1b", "\x07"))
    if any(c in hostile for c in "<>\"'"):
        assert hostile not in html_out
    assert safe.text(hostile) in html_out


#: estimate vs measured, per preset, filled by the tests (printed at the end of the module for the report)
FIGURES: dict[str, tuple[int, int, int]] = {}


@pytest.fixture(scope="module")
def config_only_dir(demo_model_dir, tmp_path_factory):
    """A folder holding the demo model's config.json and nothing else: proof that no weights are needed."""
    folder = tmp_path_factory.mktemp("config-only")
    shutil.copy(demo_model_dir / "config.json", folder / "config.json")
    return folder


def _cache_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


# ---- the demo model: estimate vs what loading it really takes ------------------------------------------------------


def test_fp32_estimate_from_config_alone_is_exact(config_only_dir, demo_engine):
    est = kanibook.estimate_memory(config_only_dir)
    model = demo_engine.model
    assert est.parameters == sum(p.numel() for p in model.parameters())
    assert est.row("fp32").weights_bytes == model.get_memory_footprint()
    assert est.row("fp32").quantized_bytes == est.row("fp32").scale_bytes == 0
    assert est.model_name == config_only_dir.name and est.method.startswith("a model on the meta device")
    assert est.context_length == model.config.max_position_embeddings  # the default: the model's context size
    FIGURES["fp32"] = (
        est.row("fp32").weights_bytes,
        model.get_memory_footprint(),
        kmem.weight_footprint(model).total_bytes,
    )


@pytest.mark.parametrize(
    "preset",
    ["bf16", pytest.param("int8", marks=pytest.mark.slow), pytest.param("nf4", marks=pytest.mark.slow)],
)  # double quantization is checked exactly on tiny models below
def test_estimate_is_within_10_percent_of_the_loaded_demo_model(preset, demo_model_dir, config_only_dir):
    est = kanibook.estimate_memory(config_only_dir)  # before loading: the config alone
    engine = kanibook.load(demo_model_dir, quant=preset)
    try:
        footprint = engine.model.get_memory_footprint()
        estimate = est.row(preset).weights_bytes
        assert abs(estimate - footprint) / footprint < 0.10, (preset, estimate, footprint)
        # next to the measured figures: the loaded model is recognised, and its real storage (quantization scales
        # included, which get_memory_footprint() leaves out) is exactly what was estimated
        compared = kanibook.estimate_memory(config_only_dir, compare=engine)
        assert compared.measured.preset == preset
        assert compared.measured.transformers_bytes == footprint
        assert compared.row(preset).weights_bytes == compared.measured.footprint_bytes == estimate
        if preset != "bf16":
            assert est.row(preset).scale_bytes > 0 and compared.measured.footprint_bytes > footprint
        html_out = compared._repr_html_()
        assert render.format_bytes(compared.measured.footprint_bytes) in html_out and "+0.0%" in html_out
        FIGURES[preset] = (estimate, footprint, compared.measured.footprint_bytes)
    finally:
        del engine
        gc.collect()


def test_report_the_figures():
    """Prints the estimate-vs-measured table (run with -s); fails if no figure was measured."""
    assert "fp32" in FIGURES
    for preset, (estimate, footprint, storage) in FIGURES.items():
        print(f"{preset:7} estimate {estimate:>11,}  get_memory_footprint {footprint:>11,}  "
              f"({(estimate - footprint) / footprint:+.2%})  real storage {storage:>11,}")  # fmt: skip


def test_kv_cache_matches_a_real_cache(demo_engine, demo_model_dir):
    import torch

    est = kanibook.estimate_memory(demo_model_dir, context_length=1000, batch_size=2)
    per_token = 30 * 2 * 3 * 64  # layers x (K, V) x kv heads x head dim, from the demo model's config
    assert est.row("fp32").kv_cache_bytes == per_token * 1000 * 2 * 4
    assert est.row("bf16").kv_cache_bytes == per_token * 1000 * 2 * 2
    assert est.row("nf4").kv_cache_bytes == est.row("fp32").kv_cache_bytes  # activations stay in the load dtype
    assert est.kv_bytes_per_token == per_token * 2 * 4
    ids = torch.randint(0, 1000, (2, 37), device=demo_engine.model.device)
    with torch.no_grad():
        cache = demo_engine.model(input_ids=ids, use_cache=True).past_key_values
    one = kanibook.estimate_memory(demo_model_dir, context_length=37, batch_size=2)
    assert _cache_bytes(cache) == one.row("fp32").kv_cache_bytes


def test_estimate_of_a_config_and_of_an_engine_agree(demo_engine, demo_model_dir):
    from transformers import AutoConfig

    by_config = kanibook.estimate_memory(AutoConfig.from_pretrained(demo_model_dir), context_length=512)
    by_engine = kanibook.estimate_memory(demo_engine, context_length=512)
    assert by_config.rows == by_engine.rows
    assert by_config.measured is None
    assert by_engine.measured.preset == "fp32"
    assert by_engine.measured.footprint_bytes == by_engine.row("fp32").weights_bytes
    assert kanibook.estimate_memory(demo_engine).context_length == demo_engine.max_context_size
    assert by_engine.model_name == str(demo_engine.model_id)


# ---- other architectures: tied / untied heads, biases, GPT-2's Conv1D --------------------------------------------


def _tiny(kind: str):
    from transformers import GPT2Config, LlamaConfig

    if kind == "gpt2":  # Conv1D layers, biases, tied head
        return GPT2Config(
            n_embd=48, n_layer=2, n_head=4, vocab_size=300, n_positions=128, bos_token_id=0, eos_token_id=0
        )
    return LlamaConfig(  # untied head, attention biases, grouped KV heads, odd sizes
        hidden_size=48, intermediate_size=100, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300, max_position_embeddings=128, tie_word_embeddings=False, attention_bias=True,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["gpt2", "llama-untied"])
def test_tiny_models_quantized_on_cpu_match_the_estimate_exactly(kind, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_tiny(kind)).save_pretrained(tmp_path)
    est = kanibook.estimate_memory(tmp_path, context_length=64)
    configs = {
        "fp32": {},
        "int8": {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)},
        "nf4-dq": {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True
            )
        },
        "fp4": {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4")},
    }
    for preset, kwargs in configs.items():
        model = AutoModelForCausalLM.from_pretrained(tmp_path, **kwargs)
        measured = kmem.weight_footprint(model)
        assert measured.preset == preset
        # exact, scales included (a 10% bound against get_memory_footprint() means little at this size: the
        # per-layer lookup tables of double quantization alone are ~10% of such a tiny model)
        assert est.row(preset).weights_bytes == measured.total_bytes, preset
    untied = kind == "llama-untied"
    assert ("output head (tied" in est.kept_summary) is not untied
    assert ("lm_head" in est.kept_summary) is untied


def test_config_that_cannot_be_built_is_counted_from_its_sizes():
    from transformers import LlamaConfig, PretrainedConfig

    sizes = {
        "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 500, "max_position_embeddings": 256, "tie_word_embeddings": True,
    }  # fmt: skip
    unknown = PretrainedConfig(**sizes)
    unknown.model_type = "kanibook-unknown-architecture"
    by_sizes = kanibook.estimate_memory(unknown)
    built = kanibook.estimate_memory(LlamaConfig(**sizes))
    assert "config's sizes" in by_sizes.method and "meta device" in built.method
    assert by_sizes.parameters == built.parameters
    assert by_sizes.quantizable_parameters == built.quantizable_parameters
    assert by_sizes.row("nf4").quantized_bytes == built.row("nf4").quantized_bytes
    assert by_sizes.row("int8").kv_cache_bytes == built.row("int8").kv_cache_bytes


def test_dtype_argument_sets_what_quantized_presets_keep(config_only_dir):
    fp32_rest = kanibook.estimate_memory(config_only_dir, context_length=100)
    bf16_rest = kanibook.estimate_memory(config_only_dir, context_length=100, dtype="bf16")
    assert bf16_rest.rest_dtype == "bfloat16"
    for preset in ("int8", "nf4"):
        a, b = fp32_rest.row(preset), bf16_rest.row(preset)
        assert a.quantized_bytes == b.quantized_bytes and a.scale_bytes == b.scale_bytes
        assert b.kept_bytes < a.kept_bytes and b.kv_cache_bytes * 2 == a.kv_cache_bytes
    assert fp32_rest.row("fp32") == bf16_rest.row("fp32")


def test_bad_arguments_say_what_to_pass(config_only_dir, tmp_path):
    with pytest.raises(KanibookError, match="model folder"):
        kanibook.estimate_memory(42)
    with pytest.raises(KanibookError, match="context_length"):
        kanibook.estimate_memory(config_only_dir, context_length=0)
    with pytest.raises(KanibookError, match="batch_size"):
        kanibook.estimate_memory(config_only_dir, batch_size=0)
    with pytest.raises(KanibookError, match="dtype"):
        kanibook.estimate_memory(config_only_dir, dtype="int3")
    with pytest.raises(KanibookError):
        kanibook.estimate_memory(tmp_path / "nowhere")
    with pytest.raises(KanibookError, match="config"):
        kanibook.estimate_memory(tmp_path)  # a folder without config.json
    with pytest.raises(KanibookError, match="No estimate"):
        kanibook.estimate_memory(config_only_dir).row("int2")


# ---- display -------------------------------------------------------------------------------------------------------


def test_estimate_shows_every_preset_and_the_numbers(config_only_dir):
    est = kanibook.estimate_memory(config_only_dir, context_length=2048, element_id="est-1")
    html_out, text = est._repr_html_(), str(est)
    assert est._repr_mimebundle_() == {"text/plain": text, "text/html": html_out}
    for preset in ("fp32", "bf16", "fp16", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq"):
        assert f">{preset}<" in html_out and f"  {preset} " in text
    assert "538 MB" in html_out and "538 MB" in text and "269 MB" in html_out
    assert render.format_bytes(est.row("nf4").weights_bytes) in text
    assert "KV cache (2,048 tok)" in html_out and "LlamaRMSNorm" in text and "measured" not in html_out
    assert (
        'id="est-1"' in html_out
        and html_out == kanibook.estimate_memory(config_only_dir, context_length=2048, element_id="est-1")._repr_html_()
    )


def test_estimate_escapes_hostile_names(hostile, config_only_dir):
    est = kanibook.estimate_memory(config_only_dir, context_length=16)
    est = dataclasses.replace(est, model_name=hostile, kept_summary=hostile, element_id=hostile)
    assert_inert(est._repr_html_(), hostile)
    text = str(est)
    assert "\x00" not in text and "\u202e" not in text
