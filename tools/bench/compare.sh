#!/usr/bin/env bash
# lmms vs HF transformers + peft, side by side in one run: the same config (random weights),
# the same batch, the same strategy, the same thread count. Prints both reports and appends a
# row with the ratio to tools/bench/results.md (or $RESULTS).
#
#   tools/bench/compare.sh MODEL STRATEGY SEQ_LEN BATCH [extra `lmms bench` flags...]
#   tools/bench/compare.sh tiny lora 64 2
#   tools/bench/compare.sh llava-100m lora 256 1 --steps 5 --warmup 1
#   DEVICE=cuda PRECISION=bf16 tools/bench/compare.sh llava-interleave-qwen-0.5b lora 1024 4
#
# Environment: LMMS (the binary; default target/release/lmms), PYTHON (default .venv/bin/python),
# THREADS (CPU threads for both; default 2), DEVICE (cpu), PRECISION (f32), STEPS (10),
# WARMUP (2), RESULTS (the table to append to).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
[ $# -ge 4 ] || { sed -n 2,14p "$0"; exit 2; }
model="$1" strategy="$2" seq="$3" batch="$4"; shift 4
lmms="${LMMS:-$root/target/release/lmms}"
python="${PYTHON:-$root/.venv/bin/python}"
threads="${THREADS:-2}" device="${DEVICE:-cpu}" precision="${PRECISION:-f32}"
steps="${STEPS:-10}" warmup="${WARMUP:-2}"
results="${RESULTS:-$root/tools/bench/results.md}"
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT

common=(--model "$model" --strategy "$strategy" --seq-len "$seq" --batch "$batch"
        --device "$device" --precision "$precision" --steps "$steps" --warmup "$warmup")
"$lmms" -q bench "${common[@]}" "$@" --save-dir "$dir" --prepare-only
gc=(); for a in "$@"; do [ "$a" = --gradient-checkpointing ] && gc=(--gradient-checkpointing); done
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
RAYON_NUM_THREADS="$threads" "$lmms" -q bench "${common[@]}" "$@" --save-dir "$dir" --json \
    > "$dir/lmms.json"
"$python" "$root/tools/bench/hf_bench.py" --dir "$dir" --strategy "$strategy" --steps "$steps" \
    --warmup "$warmup" --threads "$threads" --device "$device" --precision "$precision" \
    "${gc[@]}" --json > "$dir/hf.json"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

"$python" - "$dir/lmms.json" "$dir/hf.json" "$results" "$model" "$load_before" "$load_after" <<'PY'
import datetime, json, os, sys
lm, hf = (json.loads(open(p).read()) for p in sys.argv[1:3])
results, model, before, after = sys.argv[3:7]
gib = lambda b: f"{b / 2**30:.2f}" if b else "?"
ratio = lm["median_seconds"] / hf["median_seconds"]
for name, r in (("lmms", lm), ("hf+peft", hf)):
    mfu = f", MFU {r['mfu'] * 100:.1f}%" if r.get("mfu") else ""
    print(f"{name:8} median {r['median_seconds'] * 1e3:9.1f} ms  mean {r['mean_seconds'] * 1e3:9.1f} ms"
          f"  {r['tokens_per_second']:9.0f} tok/s  peak {gib(r['peak_memory_bytes'])} GiB"
          f"  params {r['params_total'] / 1e6:.1f}M (trainable {r['params_trainable'] / 1e6:.2f}M){mfu}")
print(f"ratio lmms/hf step time (median): {ratio:.2f}  (below 1: lmms faster)")
header = ("| date | model | strategy | precision | batch x seq | device | threads | ckpt "
          "| lmms median ms | hf median ms | ratio | lmms tok/s | hf tok/s | lmms peak GiB "
          "| hf peak GiB | lmms MFU | hf MFU | load before/after |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
mfu = lambda r: f"{r['mfu'] * 100:.1f}%" if r.get("mfu") else "-"
row = (f"| {datetime.date.today()} | {model} | {lm['strategy']} | {lm['precision']} "
       f"| {lm['batch']} x {lm['seq_len']} | {lm['device']} | {hf['threads']} "
       f"| {'yes' if lm['gradient_checkpointing'] else 'no'} "
       f"| {lm['median_seconds'] * 1e3:.1f} | {hf['median_seconds'] * 1e3:.1f} | {ratio:.2f} "
       f"| {lm['tokens_per_second']:.0f} | {hf['tokens_per_second']:.0f} "
       f"| {gib(lm['peak_memory_bytes'])} | {gib(hf['peak_memory_bytes'])} | {mfu(lm)} | {mfu(hf)} "
       f"| {before} / {after} |\n")
new = not os.path.exists(results)
with open(results, "a") as f:
    if new:
        f.write("# lmms bench vs HF transformers + peft (tools/bench/compare.sh)\n\n" + header)
    f.write(row)
print(f"appended to {results}")
PY
