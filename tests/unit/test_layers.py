"""Inside the layers, on the real demo model on a CPU (bitsandbytes 0.50): the logit lens of one model, and the lab's
comparison layer by layer (a setting against itself is zero everywhere, int8 and nf4 are not, int8's weights are
closer than nf4's on every block, outliers equal a direct count), tiny models of another and of an unknown
architecture built offline, hostile text in every view, a saved report that still draws, and one GPU run."""

from __future__ import annotations

import copy

import pytest

from kanibook.exceptions import KanibookError
from tests._html import parse_html

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital of "
        "Germany. One, two, three, four, five, six, seven.")  # fmt: skip


@pytest.fixture(scope="module")
def layers_report(demo_model_dir):
    """One comparison with the layers: the reference, fp32 loaded again, int8 and nf4 (a short text, one answer)."""
    import kanibook

    return kanibook.compare_quantization(demo_model_dir, ["fp32", ("fp32 again", "fp32"), "int8", "nf4"],
                                         prompts=["Hi"], max_new_tokens=2, reference_text=TEXT, progress=False,
                                         layers=True)  # fmt: skip


def _run(fn, *args):
    from kanibook.engine._model_thread import model_thread

    return model_thread().run(fn, *args)


# ---- the logit lens of one model ------------------------------------------------------------------------------------


def test_the_lens_at_the_last_layer_is_the_models_own_logits(demo_engine):
    import torch

    from kanibook.layers.lens import capture, find_parts, lens_logits

    ids = demo_engine.tokenizer(TEXT)["input_ids"]

    def run():
        parts = find_parts(demo_engine.model)
        stream, logits = capture(demo_engine.model, parts, ids)
        return stream, logits, lens_logits(parts, stream[-1]), lens_logits(parts, stream[-2])

    stream, logits, last, before = _run(run)
    assert len(stream) == demo_engine.model.config.num_hidden_layers + 1 and stream[0].shape[0] == len(ids)
    torch.testing.assert_close(last, logits, atol=1e-4, rtol=1e-5)
    assert (before - logits).abs().max() > 1e-2  # the layer before is another prediction


def test_show_layers_tables_every_layer_and_where_each_position_settles(demo_engine):
    import torch

    import kanibook

    view = kanibook.show_layers(demo_engine, "The capital of France is", element_id="kb-lens")
    ids = demo_engine.tokenizer("The capital of France is")["input_ids"]
    assert len(view.tokens) == len(ids) and len(view.layer_names) == demo_engine.model.config.num_hidden_layers + 1
    final = _run(lambda: demo_engine.model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist())
    assert [layer[0] for layer in view.top_ids[-1]] == final
    for p, settle in enumerate(view.settles):
        assert all(view.top_ids[l][p][0] == final[p] for l in range(settle, len(view.layer_names)))
        assert settle == 0 or view.top_ids[settle - 1][p][0] != final[p]
    for layer in view.top_probs:
        for cell in layer:
            assert cell == sorted(cell, reverse=True) and 0 < sum(cell) <= 1.0 + 1e-5
    assert view.position == len(ids) - 1 and view.at(0)[0]["layer"] == "embed"
    html = view._repr_mimebundle_()["text/html"]
    assert 'id="kb-lens"' in html and "<style" not in html and "settles at" in html
    assert "settles at layer" in str(view)
    with pytest.raises(KanibookError, match="outside the text"):
        kanibook.show_layers(demo_engine, "Hello", position=99)
    with pytest.raises(KanibookError, match="needs a text"):
        kanibook.show_layers(demo_engine)


def test_show_layers_with_messages_uses_the_templated_prompt(demo_engine):
    from kani import ChatMessage, Kani

    import kanibook

    messages = [ChatMessage.user("What is the capital of France?")]
    view = kanibook.show_layers(demo_engine, messages, position=-2)
    prompt = kanibook.show_prompt(demo_engine, messages)
    assert [t.id for t in prompt.tokens] == view.token_ids and len(view.tokens) == len(view.token_ids)
    assert {role for role, _, _ in view.segments} >= {"user"} and view.position == len(view.tokens) - 2
    from_kani = kanibook.show_layers(Kani(demo_engine, chat_history=messages))  # a Kani: its conversation
    assert from_kani.tokens == view.tokens


def test_other_architectures_and_an_unknown_one():
    """The lens at the last layer is the model's own logits on GPT-2 (transformer.h, ln_f), OPT in both layouts (a
    final norm and a project_out; OPT-350m's norm after each block and none at the end) and Cohere (a logit scale);
    an RWKV (no attention blocks where transformers keeps them) gets one line naming the part."""
    import torch
    from transformers import (CohereConfig, CohereForCausalLM, GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM,
                              RwkvConfig, RwkvForCausalLM)  # fmt: skip

    from kanibook.layers.lens import LensNotFound, capture, find_parts, lens_logits

    torch.manual_seed(0)
    opt = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "ffn_dim": 32, "num_attention_heads": 2,
           "max_position_embeddings": 32}  # fmt: skip
    models = [
        GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)),
        OPTForCausalLM(OPTConfig(**opt, word_embed_proj_dim=8)),
        OPTForCausalLM(OPTConfig(**opt, word_embed_proj_dim=8, do_layer_norm_before=False)),
        CohereForCausalLM(CohereConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, logit_scale=0.0625,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0)),  # fmt: skip
    ]
    for model in models:
        parts = find_parts(model.eval())
        stream, logits = _run(capture, model, parts, list(range(3, 13)))
        assert len(stream) == 3, type(model).__name__
        torch.testing.assert_close(_run(lens_logits, parts, stream[-1]), logits, atol=1e-5, rtol=1e-5)
    rwkv = RwkvForCausalLM(RwkvConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
                                      intermediate_size=32, context_length=32))  # fmt: skip
    with pytest.raises(LensNotFound) as caught:
        find_parts(rwkv)
    message = str(caught.value)
    assert "RwkvForCausalLM" in message and "\n" not in message and isinstance(caught.value, KanibookError)


def test_the_lab_looks_inside_an_opt_model(tmp_path):
    """OPT, the model family LLM.int8 was measured on: the lab's layers pass runs on its own layout (fc1/fc2, a
    project_out), a setting against itself is zero and int8 is not."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    import kanibook
    from tests.unit.conftest import LLAMA2_TEMPLATE, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(["<unk>", "<s>", "</s>"], LLAMA2_TEMPLATE, bos="<s>", eos="</s>")
    torch.manual_seed(0)
    OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                             num_attention_heads=2, max_position_embeddings=256, word_embed_proj_dim=32,
                             bos_token_id=1, eos_token_id=2, pad_token_id=2)).save_pretrained(tmp_path)  # fmt: skip
    tokenizer.save_pretrained(tmp_path)
    report = kanibook.compare_quantization(tmp_path, ["fp32", ("fp32 again", "fp32"), "int8"], prompts=["Hi"],
                                           max_new_tokens=2, reference_text=TEXT, progress=False, layers=True)  # fmt: skip
    settings = report.layers["settings"]
    assert not any("unavailable" in entry for entry in settings.values()), settings
    assert max(settings["fp32 again"]["kl_mean"]) < 1e-6 and settings["int8"]["rel_error_mean"][-1] > 0
    assert set(settings["int8"]["weights"]["per_kind"]) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert report.show_layers("int8")._repr_mimebundle_()["text/html"].count("<img") == 3


# ---- the lab, layer by layer ----------------------------------------------------------------------------------------


def test_a_setting_against_itself_is_zero_at_every_layer(layers_report):
    settings = layers_report.layers["settings"]
    for label in ("fp32", "fp32 again"):
        entry = settings[label]
        assert len(entry["rel_error_mean"]) == len(layers_report.layers["layer_names"])
        assert all(v == 0.0 for row in entry["rel_error"] for v in row), label
        assert all(v == 0.0 for row in entry["kl"] for v in row), label
        assert all(v == 100.0 for v in entry["same_top_pct"]) and entry["flip_layers"] == []
        assert set(entry["weights"]["modules"].values()) == {0.0}, label


def test_int8_and_nf4_differ_and_int8_weights_are_closer_on_every_block(layers_report):
    settings = layers_report.layers["settings"]
    int8, nf4 = settings["int8"], settings["nf4"]
    for entry in (int8, nf4):
        assert entry["rel_error_mean"][0] == 0.0  # the embeddings are not quantized
        assert all(v > 0 for v in entry["rel_error_mean"][1:]) and all(v > 0 for v in entry["kl_mean"][1:])
        assert all(0 < v < 1 for v in entry["weights"]["modules"].values())
    blocks = nf4["weights"]["per_block"]
    assert len(blocks) == 30 and blocks.keys() == int8["weights"]["per_block"].keys()
    for block, err in blocks.items():
        assert int8["weights"]["per_block"][block] < err, block
    assert int8["rel_error_mean"][-1] < nf4["rel_error_mean"][-1] and int8["kl_mean"][-1] < nf4["kl_mean"][-1]


def test_the_lens_kl_at_the_last_layer_agrees_with_the_labs_own_kl(layers_report):
    """The lens's KL is taken over the reference's top 64 tokens and the rest as one bin: never above the full KL
    (the lab's, from the whole distribution), and close to it."""
    for label in ("int8", "nf4"):
        lumped = layers_report.layers["settings"][label]["kl"][-1]
        full = layers_report.positions[label]["kl"]
        assert len(lumped) == len(full)
        assert all(a <= b * (1 + 1e-2) + 1e-6 for a, b in zip(lumped, full)), label  # 3 digits kept
        assert sum(lumped) >= 0.9 * sum(full), label


def test_flipped_positions_and_the_layer_they_part(layers_report):
    from kanibook.layers.compare import flip_layers

    entry = layers_report.layers["settings"]["nf4"]
    assert {p for p, _ in entry["flip_layers"]} == {j for j, _, _ in layers_report.positions["nf4"]["flips"]}
    top = len(layers_report.layers["layer_names"]) - 1
    assert all(0 <= layer <= top for _, layer in entry["flip_layers"])
    # position 0 parts at layer 2 and stays apart; position 1 agrees at the end; position 2 parts only at the top
    ref = [[5, 5, 5], [1, 1, 1], [7, 7, 7], [4, 4, 4]]  # [layer][position]
    new = [[5, 5, 5], [1, 2, 1], [3, 7, 7], [9, 4, 8]]
    assert flip_layers(ref, new) == [[0, 2], [2, 3]]


def test_outlier_counts_equal_a_direct_count_with_hooks(layers_report, demo_engine):
    import torch

    ids = torch.tensor([demo_engine.tokenizer(TEXT)["input_ids"]])
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in demo_engine.model.named_modules():
        if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(
                lambda m, args, out, name=name: seen.__setitem__(name, args[0][0].abs().amax(dim=0))))

    def forward():
        with torch.no_grad():
            demo_engine.model(input_ids=ids)

    try:
        _run(forward)
    finally:
        for h in handles:
            h.remove()
    rows = {r["name"]: r for r in layers_report.layers["outliers"]}
    assert rows.keys() == seen.keys()
    for name, mags in seen.items():
        assert rows[name]["count"] == int((mags >= 6.0).sum()), name
        assert rows[name]["max"] == pytest.approx(float(mags.max()), rel=1e-3)
    assert sum(r["count"] for r in rows.values()) > 0  # the demo model has some on this text


def test_the_weight_histogram_carries_the_formats_levels(layers_report):
    hist = layers_report.layers["histogram"]
    assert sum(hist["counts"]) > 0 and len(hist["edges"]) == len(hist["counts"]) + 1
    assert len(hist["levels"]["nf4"]) == 16 and len(hist["levels"]["int8"]) == 255
    assert max(hist["levels"]["nf4"]) == pytest.approx(hist["block_absmax"]) and hist["edges"][-1] >= hist["row_absmax"]
    assert hist["tail_ratio"] == max(t["tail_ratio"] for t in layers_report.layers["tails"])


def test_a_saved_and_loaded_report_still_draws(layers_report, tmp_path):
    from kanibook.quant.report import QuantReport

    loaded = QuantReport.load(layers_report.save(tmp_path / "r.json"))
    assert loaded.layers["settings"]["nf4"]["kl_mean"] == layers_report.layers["settings"]["nf4"]["kl_mean"]
    view = loaded.show_layers("nf4", element_id="kb-lr")
    html = view._repr_mimebundle_()["text/html"]
    assert html.count("<img") == 3 and "apart from layer" in html and "dims ≥ threshold" in html
    assert "<style" not in html and "<script" not in html
    assert "nf4" in str(view) and loaded.show_layers().label == "int8"  # the first quantized setting by default
    with pytest.raises(KanibookError, match="No setting"):
        loaded.show_layers("q3")
    old = copy.deepcopy(loaded)
    old.layers = {}
    assert "layers=True" in str(old.show_layers())


def test_the_gguf_row_says_it_has_no_hidden_states():
    from types import SimpleNamespace

    from kanibook.layers.compare import NO_HIDDEN_STATES, LayerRecorder, lab_record

    lab = SimpleNamespace(layers=True, recorder=LayerRecorder(".", [1, 2, 3]), path=".", tokenizer=None, text="")
    native = SimpleNamespace(label="gguf", preset="gguf", reference=False)
    lab_record(lab, SimpleNamespace(model=None), native, {}, {})
    assert lab.recorder.data["settings"]["gguf"] == {"unavailable": NO_HIDDEN_STATES}


# ---- hostile text -----------------------------------------------------------------------------------------------------


def _inert(html: str, hostile: str) -> None:
    parsed = parse_html(html)
    assert {tag for tag, _ in parsed.tags} <= {"div", "table", "tr", "th", "td", "span", "img"}
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert all(attrs.get("src", "data:image/png;base64,").startswith("data:image/png;base64,")
               for _, attrs in parsed.tags)  # fmt: skip
    assert "\u202e" not in html and "\x00" not in html and "\x1b" not in html


def test_hostile_token_texts_are_inert_in_the_lens_view(hostile):
    from kanibook.layers.show import LayersView

    view = LayersView(tokens=["a", hostile], layer_names=["embed", hostile], top_ids=[[[1, 2]] * 2] * 2,
                      top_probs=[[[0.7, 0.2]] * 2] * 2, top_texts=[[[hostile, "b"]] * 2] * 2, settles=[0, 1],
                      position=1, segments=[(hostile, 0, 2)], model=hostile, element_id=hostile)  # fmt: skip
    _inert(view._repr_mimebundle_()["text/html"], hostile)
    assert "\u202e" not in str(view)


def test_hostile_strings_are_inert_in_the_lab_view(layers_report, hostile):
    evil = copy.deepcopy(layers_report)
    settings = evil.layers["settings"]
    settings[hostile] = settings.pop("nf4")
    settings["int8"] = {"unavailable": hostile}
    evil.rows[3]["label"] = hostile
    evil.positions[hostile] = evil.positions.pop("nf4")
    evil.tokens = [hostile] * len(evil.tokens)
    evil.layers["outliers"][0].update(count=1, kind=hostile, dims=[hostile])
    evil.layers["off"] = hostile
    evil.model = hostile
    view = evil.show_layers(hostile, plots=False, element_id=hostile)
    html = view._repr_mimebundle_()["text/html"]
    _inert(html, hostile)
    from kanibook.render.safe import clean_chars

    assert f"int8: {clean_chars(hostile)}" in "".join(parse_html(html).text)
    assert "\u202e" not in str(view)


# ---- on a GPU ---------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_the_comparison_on_cuda(demo_model_dir):
    import kanibook

    report = kanibook.compare_quantization(demo_model_dir, ["bf16", ("bf16 again", "bf16"), "int8", "nf4"],
                                           prompts=["Hi"], max_new_tokens=2, reference_text=TEXT, device="cuda",
                                           progress=False, layers=True)  # fmt: skip
    settings = report.layers["settings"]
    assert max(v for row in settings["bf16 again"]["kl"] for v in row) < 1e-6
    assert settings["nf4"]["kl_mean"][-1] > 0 and settings["int8"]["rel_error_mean"][-1] > 0
    blocks = settings["nf4"]["weights"]["per_block"]
    assert all(settings["int8"]["weights"]["per_block"][b] < e for b, e in blocks.items())
    assert report.show_layers("nf4")._repr_mimebundle_()["text/html"].count("<img") == 3


def test_by_default_the_layers_stay_on_only_where_they_cost_under_a_third(demo_engine):
    """``layers=None``: judged at the reference from its measured quality pass, scaled by the lens's cost."""
    from types import SimpleNamespace

    from kanibook.layers.compare import LayerRecorder, lab_record, lens_cost_ratio

    ratio = lens_cost_ratio(demo_engine.model)
    config = demo_engine.model.config
    assert ratio == pytest.approx((config.num_hidden_layers + 1) * config.vocab_size * config.hidden_size
                                  / sum(p.numel() for p in demo_engine.model.parameters()))  # fmt: skip
    reference = SimpleNamespace(label="fp32", preset="fp32", reference=True)
    for load_s, off in ((1000.0, False), (0.0, True)):
        lab = SimpleNamespace(layers=None, recorder=LayerRecorder(".", [1, 2, 3]))
        recorded = []
        lab.recorder.record = lambda *a, lab=lab: recorded.append(a) or lab.recorder.data["settings"].setdefault("fp32", {})
        lab_record(lab, demo_engine, reference, {"load_s": load_s, "quality_s": 1.0, "answers_s": 1.0}, {})
        assert bool(lab.recorder.data.get("off")) is off and bool(recorded) is not off
        assert "layers=True" in lab.recorder.data.get("off", "layers=True")
