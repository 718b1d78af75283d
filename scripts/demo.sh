#!/usr/bin/env bash
# A local demo of every runbook against the emulator, printing the reports.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --workspace --bins --locked --quiet
cargo run --locked --quiet -p runbook-tests --bin demo
