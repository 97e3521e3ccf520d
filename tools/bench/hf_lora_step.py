"""HF transformers + peft baseline for `lmms train`'s LoRA step on the tiny example model: same
model (example_data/tiny-llava), same data (example_data/llava_dataset.json, batch 2), same
LoRA (r 8, alpha 16, all linear layers of the LLM, projector trained), AdamW. Prints the mean
step time over the timed steps. Usage: hf_lora_step.py [STEPS]"""

import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from peft import LoraConfig, get_peft_model
from transformers import AutoProcessor, LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "example_data/tiny-llava"
DATA = ROOT / "example_data/llava_dataset.json"
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
torch.manual_seed(0)
torch.set_num_threads(2)

processor = AutoProcessor.from_pretrained(MODEL)
model = LlavaForConditionalGeneration.from_pretrained(MODEL, torch_dtype=torch.float32, attn_implementation="sdpa")
lora = LoraConfig(
    r=8, lora_alpha=16, lora_dropout=0.0,
    target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    modules_to_save=["multi_modal_projector"],
)
model = get_peft_model(model, lora)
model.train()

samples = json.loads(DATA.read_text())
batches = []
for i in range(0, len(samples), 2):
    texts, images = [], []
    for s in samples[i:i + 2]:
        msgs = []
        for turn in s["conversations"]:
            role = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}[turn["from"]]
            parts = []
            for chunk in turn["value"].split("<image>")[:-1]:
                parts.append({"type": "image"})
            parts.append({"type": "text", "text": turn["value"].replace("<image>", "").strip()})
            msgs.append({"role": role, "content": parts})
        texts.append(processor.apply_chat_template(msgs))
        imgs = s.get("image", [])
        imgs = [imgs] if isinstance(imgs, str) else imgs
        images.extend(Image.open(DATA.parent / p).convert("RGB") for p in imgs)
    enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    enc["labels"] = enc["input_ids"].clone()
    batches.append(enc)

opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
def step(b):
    loss = model(**b).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    return loss.item()

for b in batches * 2:  # warm-up
    step(b)
t0 = time.perf_counter()
for k in range(steps):
    step(batches[k % len(batches)])
dt = (time.perf_counter() - t0) / steps
print(f"hf+peft lora step: {dt * 1e3:.2f} ms (mean of {steps}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
