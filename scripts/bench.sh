#!/usr/bin/env bash
# The bench command: builds the functions in release (stripped), measures them against the
# emulator, prints one table and writes bench-results/bench.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release --workspace --bins --locked --quiet
cargo run --release --locked --quiet -p runbook-tests --bin bench
