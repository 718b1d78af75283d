#!/usr/bin/env bash
# Creates (or refreshes) the repo-local Python venv with the pinned emulator and linters.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
wanted="$(cat "$root/tests/requirements.txt" "$root/tests/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  exit 0
fi
echo "setup: installing the pinned Python tools into .venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  -r "$root/tests/requirements.txt" -c "$root/tests/constraints.txt"
echo "$wanted" > "$stamp"
