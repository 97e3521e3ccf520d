#!/usr/bin/env bash
# The README's main job: LoRA-train the tiny LLaVA on example_data/ on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo run --release -p lmms-cli -- train --config example_data/tiny-llava-lora.toml "$@"
