#!/usr/bin/env bash
# The organization measurement: 1,000 throttle alarms from 20 spoke accounts through the release
# limit-scaler binaries of one hub, against the emulator. Prints one table and writes
# bench-results/fleet.json (docs/organization.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release --workspace --bins --locked --quiet
cargo run --release --locked --quiet -p runbook-tests --bin fleet_bench
