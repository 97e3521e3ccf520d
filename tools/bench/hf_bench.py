"""HF transformers + peft baseline of `lmms bench`: the same config with random weights, the
same strategy and LoRA settings, the same batch, the same training step (forward, loss,
backward, global-norm clipping at 1.0, AdamW), timed the same way; prints the same figures.

The model directory and batch come from lmms:

    lmms bench --model tiny --seq-len 64 --batch 2 --save-dir /tmp/b --prepare-only
    python tools/bench/hf_bench.py --dir /tmp/b --strategy lora --threads 2 [--json]

`--dir` holds config.json and inputs.safetensors (input_ids, attention_mask, labels and the
family's pixel tensors, under the names the HF forward takes). Strategies as in lmms bench:
lora = LoRA (r, alpha, dropout) on every linear layer of the LLM + projector trained fully
(PEFT `modules_to_save`) + vision tower frozen; full = LLM and projector trained, vision tower
frozen; qlora = lora over a 4-bit (bitsandbytes NF4) LLM, CUDA only.

Peak memory: CPU, the peak RSS after the model is built (VmHWM, reset through
/proc/self/clear_refs as lmms does); CUDA, torch.cuda.max_memory_reserved() over the steps
(the caching allocator's high-water mark, the counterpart of cubecl's reserved pools). MFU uses
the formula of lmms_core::bench::flops (docs/BENCHMARKS.md).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

PEAKS = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100 NVL", 835.5), ("H100", 989.4),
         ("A100", 312.0), ("L40S", 362.05), ("A10G", 70.0)]
# Linear layers of the LLM that LoRA targets (PEFT's all-linear without the LM head).
LLM_LINEARS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def vm_kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return None


def part_of(name):
    """lmms's parts, from transformers' run-time parameter names."""
    if "multi_modal_projector" in name or "visual.merger" in name or "image_newline" in name:
        return "projector"
    if "vision_tower" in name or ".visual." in name or name.startswith("visual."):
        return "vision_tower"
    return "llm"


def is_embedding(name):
    return name.endswith(("embed_tokens.weight", "position_embedding.weight", "wte.weight"))


def step_flops(config, model, tokens, rows, patches, images):
    """lmms_core::bench::flops::step_flops, on this model's parameters."""
    count = {"llm": [0, 0], "projector": [0, 0], "vision_tower": [0, 0]}
    embeddings = [0, 0]
    seen = set()
    for name, p in model.named_parameters():
        # PEFT's modules_to_save keeps the frozen original next to the trained copy.
        if id(p) in seen or ".original_module." in name:
            continue
        seen.add(id(p))
        if is_embedding(name.replace(".base_layer", "")):
            embeddings[0] += p.numel()
            embeddings[1] += p.numel() if p.requires_grad else 0
            continue
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # packed 4-bit
        c = count[part_of(name)]
        c[0] += n
        c[1] += n if p.requires_grad else 0
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    vision_trains = count["vision_tower"][1] > 0

    def part(p, n, backward):
        a, t = count[p]
        return n * (2 * a + (2 * a if backward else 0) + 2 * t)

    flops = part("llm", tokens, True) + part("projector", patches, vision_trains) \
        + part("vision_tower", patches, vision_trains)
    if text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)):
        flops += 4 * text.get("vocab_size", 0) * text.get("hidden_size", 0) * tokens
    seq = tokens / max(rows, 1)
    flops += 12 * text.get("num_hidden_layers", 0) * text.get("hidden_size", 0) * seq * tokens
    if patches:
        lv = vision.get("num_hidden_layers", vision.get("depth", 0))
        dv = vision.get("embed_dim", vision.get("hidden_size", 0))
        flops += (12 if vision_trains else 4) * lv * dv * (patches / max(images, 1)) * patches
    total = sum(c[0] for c in count.values()) + embeddings[0]
    return flops, total, sum(c[1] for c in count.values()) + embeddings[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--strategy", choices=["lora", "qlora", "full"], default="lora")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--attn", default="sdpa", help="sdpa, eager or flash_attention_2")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--learning-rate", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    config_json = json.loads((a.dir / "config.json").read_text())
    config = transformers.AutoConfig.for_model(**config_json)
    config._attn_implementation = a.attn
    cls = getattr(transformers, config_json["architectures"][0])
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32

    t0 = time.perf_counter()
    if a.strategy == "qlora":
        if not cuda:
            sys.exit("qlora needs CUDA (bitsandbytes)")
        import tempfile
        from transformers import BitsAndBytesConfig
        with torch.device(device):
            model = cls._from_config(config, dtype=torch.bfloat16)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            del model
            torch.cuda.empty_cache()
            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.bfloat16,
                                   llm_int8_skip_modules=["vision_tower", "visual",
                                                          "multi_modal_projector", "lm_head"])
            model = cls.from_pretrained(tmp, quantization_config=q, dtype=torch.bfloat16,
                                        device_map={"": device}, attn_implementation=a.attn)
    else:
        with torch.device(device):
            model = cls._from_config(config, dtype=dtype)
    model.train()

    if a.strategy in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model
        if a.strategy == "qlora":
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=a.gradient_checkpointing)
        projector = "merger" if "qwen2" in config_json["model_type"] else "multi_modal_projector"
        lora = LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                          target_modules=LLM_LINEARS, modules_to_save=[projector])
        model = get_peft_model(model, lora)
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(part_of(name) != "vision_tower")
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    build_seconds = time.perf_counter() - t0

    batch = {k: v.to(device) for k, v in load_file(a.dir / "inputs.safetensors").items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
    rows, seq = batch["input_ids"].shape
    tokens = rows * seq
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.learning_rate, weight_decay=0.0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")

    def step():
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize(device)
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    if cuda:
        peak = torch.cuda.max_memory_reserved(device)
        kind = "torch.cuda.max_memory_reserved"
        name = torch.cuda.get_device_name(device)
    else:
        peak = vm_kib("VmHWM:") * 1024
        kind = "peak RSS during the steps (VmHWM)"
        name = f"CPU, torch {torch.__version__}"
    images = batch["image_grid_thw"].shape[0] if "image_grid_thw" in batch else \
        (batch["pixel_values"].shape[0] if "pixel_values" in batch else 0)
    if "image_grid_thw" in batch:
        patches = int(batch["image_grid_thw"].prod(-1).sum())
    elif "pixel_values" in batch:
        v = config_json["vision_config"]
        side = v.get("image_size", 224) // v.get("patch_size", 32)
        cls_token = v.get("model_type") != "siglip_vision_model"
        patches = images * (side * side + int(cls_token))
    else:
        patches = 0
    flops, total, trainable = step_flops(config_json, model, tokens, rows, patches, images)
    median = statistics.median(times)
    peak_tflops = next((v for k, v in PEAKS if k in name), None) if cuda else None
    report = {
        "tool": "hf", "strategy": a.strategy, "precision": a.precision, "seq_len": seq,
        "batch": rows, "steps": a.steps, "warmup": a.warmup, "device": a.device,
        "device_name": name, "threads": torch.get_num_threads(), "attn": a.attn,
        "gradient_checkpointing": a.gradient_checkpointing,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "step_seconds": times, "mean_seconds": statistics.mean(times), "median_seconds": median,
        "min_seconds": min(times), "tokens_per_step": tokens, "tokens_per_second": tokens / median,
        "peak_memory_bytes": peak, "memory_kind": kind, "params_total": total,
        "params_trainable": trainable, "flops_per_step": flops, "first_loss": losses[0],
        "last_loss": losses[-1], "build_seconds": build_seconds, "peak_bf16_tflops": peak_tflops,
        "mfu": flops / median / (peak_tflops * 1e12) if peak_tflops else None,
    }
    if a.json:
        print(json.dumps(report))
        return
    print(f"hf bench: {a.dir} ({config_json['architectures'][0]}), {a.strategy} {a.precision}"
          f"{', gradient checkpointing' if a.gradient_checkpointing else ''}, "
          f"batch {rows} x {seq} tokens")
    print(f"device: {a.device} ({name}, {torch.get_num_threads()} threads, attn {a.attn})")
    print(f"parameters: {total / 1e6:.1f}M, trainable {trainable / 1e6:.2f}M; "
          f"built in {build_seconds:.1f} s")
    print(f"step time: mean {report['mean_seconds'] * 1e3:.1f} ms, median {median * 1e3:.1f} ms, "
          f"min {min(times) * 1e3:.1f} ms over {a.steps} steps (after {a.warmup} warm-up)")
    print(f"throughput: {tokens / median:.0f} tokens/s")
    print(f"peak memory: {peak / 2**30:.2f} GiB ({kind})")
    mfu = f", MFU {report['mfu'] * 100:.1f}%" if report["mfu"] else ""
    print(f"model FLOPs: {flops / 1e12:.3f} TFLOP/step{mfu}")
    print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
