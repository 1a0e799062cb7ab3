"""The GPU check's measuring part (run by bench/gpu_check.sh): random-weight models from configs, each precision loaded
in turn, its cost measured, everything written to one JSON file.

    python bench/gpu_check.py prepare ASSETS            (any machine: configs + the demo tokenizer into ASSETS)
    python bench/gpu_check.py build ASSETS MODELS       (random weights for each config, saved under MODELS)
    python bench/gpu_check.py measure MODELS RESULTS [--device cuda] [--tokens 64] [--settings bf16,fp16,int8,nf4,fp4]

Speed and memory need no trained weights, and no hub is reachable from the GPU machine, so the models are built
from configs: the embedded model's architecture (SmolLM2-135M) and a Llama of about 1B parameters with the same
tokenizer. For each model and setting: load time, weight footprint (``get_memory_footprint``) and kanibook's
estimate, peak CUDA memory while generating, decode tokens/s (greedy, exactly N tokens, through kanibook's engine),
and ``kanibook.memory()``'s reading against ``torch.cuda.max_memory_allocated``. ``--device cpu`` runs the same
code on a CPU (for a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import time
from pathlib import Path

#: About 1.2B parameters, Llama-3.2-1B's shape with the demo model's 49,152-token vocabulary.
LLAMA_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}  # fmt: skip
#: A tiny Llama for --smoke runs on a CPU.
LLAMA_TINY = {**LLAMA_1B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja")  # fmt: skip


def prepare(assets: Path, smoke: bool = False) -> None:
    """Write each model's config.json and the demo model's tokenizer files (a few MB: they travel with the repo)."""
    from kanibook.demo_model import demo_model_path

    demo = demo_model_path(progress=False)
    demo_config = json.loads((demo / "config.json").read_text())
    configs = {"smollm2-135m-arch": demo_config, "llama-1b": {**demo_config, **LLAMA_1B}}
    if smoke:
        configs = {"llama-tiny": {**demo_config, **LLAMA_TINY}}
    for name, config in configs.items():
        folder = assets / name
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in config.items() if k not in ("quantization_config", "_name_or_path")}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        for file in TOKENIZER_FILES:
            if (demo / file).is_file():
                shutil.copyfile(demo / file, folder / file)
    print(f"prepared {', '.join(configs)} in {assets}")


def build(assets: Path, models: Path) -> None:
    """Random weights (bf16) for each prepared config, saved as ordinary Hugging Face folders."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    for folder in sorted(p for p in assets.iterdir() if (p / "config.json").is_file()):
        target = models / folder.name
        if (target / "model.safetensors").is_file():
            continue
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(target)
        for file in folder.iterdir():
            if file.name != "config.json":
                shutil.copyfile(file, target / file.name)
        print(f"built {folder.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
        del model
        gc.collect()


def measure_one(folder: Path, setting: str, device: str, tokens: int) -> dict:
    import asyncio

    import torch
    from kani import ChatMessage

    import kanibook

    row = {"model": folder.name, "setting": setting}
    cuda = device.startswith("cuda")
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        estimate = kanibook.estimate_memory(folder)
        start = time.perf_counter()
        engine = kanibook.load(folder, quant=setting, device=device)
        row["load_s"] = round(time.perf_counter() - start, 2)
        row["footprint_bytes"] = engine.model.get_memory_footprint()
        row["estimate_bytes"] = next((p.weights_bytes for p in estimate.rows if p.preset == setting), None)
        messages = [ChatMessage.user("Write a long story about a lighthouse keeper and a storm.")]

        async def once():
            async for item in engine.stream(messages, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False):
                if not isinstance(item, str):
                    return item.stats

        asyncio.run(once())  # warm-up (kernels, allocator)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        stats = asyncio.run(once())
        row.update(tokens=stats.completion_tokens, tokens_per_s=stats.tokens_per_second,
                   ttft_s=stats.time_to_first_token_s, peak_bytes=stats.peak_memory_bytes,
                   peak_kind=stats.memory_kind)  # fmt: skip
        if cuda:
            index = torch.cuda.current_device()
            view = [d for d in kanibook.memory(engine).devices if d.index == index][0]
            row["memory_view_peak_bytes"] = view.peak_allocated
            row["torch_max_memory_allocated"] = torch.cuda.max_memory_allocated(index)
        engine = None  # release the model before the next setting
    except Exception as e:  # noqa: BLE001 - a setting the machine cannot run is a row with the reason
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def machine(device: str) -> dict:
    from importlib import metadata

    import torch

    info = {"python": platform.python_version(), "device": device, "torch": torch.__version__}
    for package in ("transformers", "bitsandbytes", "kani", "accelerate"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return info


def measure(models: Path, results: Path, device: str, tokens: int, settings: list[str]) -> dict:
    rows = []
    for folder in sorted(p for p in models.iterdir() if (p / "config.json").is_file()):
        for setting in settings:
            row = measure_one(folder, setting, device, tokens)
            rows.append(row)
            shown = {k: row[k] for k in ("tokens_per_s", "footprint_bytes", "peak_bytes", "error") if k in row}
            print(f"{folder.name:>20} {setting:>5}: {shown}", flush=True)
    report = {"machine": machine(device), "tokens": tokens, "rows": rows}
    from kanibook._files import write_text_atomic

    write_text_atomic(results, json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("assets", type=Path)
    p.add_argument("--smoke", action="store_true", help="a tiny model only (a CPU test of this script)")
    b = sub.add_parser("build")
    b.add_argument("assets", type=Path)
    b.add_argument("models", type=Path)
    m = sub.add_parser("measure")
    m.add_argument("models", type=Path)
    m.add_argument("results", type=Path)
    m.add_argument("--device", default="cuda")
    m.add_argument("--tokens", type=int, default=64)
    m.add_argument("--settings", default="bf16,fp16,int8,nf4,fp4")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.assets, args.smoke)
    elif args.step == "build":
        build(args.assets, args.models)
    else:
        measure(args.models, args.results, args.device, args.tokens, args.settings.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
