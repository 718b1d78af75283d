#!/usr/bin/env bash
# The whole test suite: formatting, Python tools, the layering check, the function binaries (the
# end-to-end tests run them), every test of the workspace, and clippy with warnings as errors.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo fmt --all --check
python3 scripts/check-layers.py
scripts/setup.sh
cargo build --workspace --bins --locked
# The integration tests wait mostly on the emulator and on each other's AWS round trips, not on
# the CPU: eight at once keep two cores busy. A test that measures time runs on its own emulator.
# A failure's message, not forty frames of tokio, is what the tail of a CI log shows.
RUST_BACKTRACE=0 cargo test --workspace --locked -- --test-threads 8
cargo clippy --workspace --all-targets --locked -- -D warnings
