#!/usr/bin/env bash
# The whole test suite: formatting, Python tools, the function binaries (the end-to-end tests
# run them), every test of the workspace, and clippy with warnings as errors.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo fmt --all --check
scripts/setup.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
