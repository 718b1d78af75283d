#!/usr/bin/env bash
# The invariants of docs/invariants.md tried over long random runs of limit-scaler and
# dlq-redriver against moto:
#   scripts/soak.sh [--steps N] [--seed S]
# (scripts/test.sh runs the same generator for a bounded number of steps.) A violation prints
# its seed and the shortest sequence found that still violates; run it again with --seed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
steps=10000
seed="$(date +%s)"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: scripts/soak.sh [--steps N] [--seed S]" >&2; exit 2 ;;
  esac
done
case "$steps$seed" in
  *[!0-9]*) echo "scripts/soak.sh: --steps and --seed take whole numbers" >&2; exit 2 ;;
esac
scripts/setup.sh
INVARIANT_STEPS="$steps" INVARIANT_SEED="$seed" cargo test --locked -p runbook-tests \
  --test integration -- invariants:: --nocapture --test-threads 2
