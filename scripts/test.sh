#!/usr/bin/env bash
# The README's test command: every test of the workspace (CI runs this too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace "$@"
