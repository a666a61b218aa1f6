#!/usr/bin/env bash
# The test command: sets the machine up, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
