#!/usr/bin/env bash
# Builds the four functions for Lambda with the SAM CLI: `sam build` runs cargo-lambda, which
# cross-compiles each binary for arm64 with zig (release profile). Artifacts land in
# .aws-sam/build/<Function>/bootstrap, ready for `sam deploy`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
rustup target add aarch64-unknown-linux-gnu >&2
# sam build wants no absolute CARGO_TARGET_DIR (it copies the artifacts from the target folder).
unset CARGO_TARGET_DIR
export PATH="$root/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
# The rust-cargolambda build method is a beta feature of the SAM CLI.
sam build --beta-features "$@"
for function in LimitScalerFunction DlqRedriverFunction AlarmResponderFunction HealthProberFunction; do
  file ".aws-sam/build/$function/bootstrap" 2>/dev/null || ls -l ".aws-sam/build/$function/bootstrap"
done
