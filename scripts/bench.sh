#!/usr/bin/env bash
# The bench command: prints one table and writes bench-results/bench.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --workspace --bins --locked --quiet
cargo run --locked --quiet -p runbook-tests --bin bench
