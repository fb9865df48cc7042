#!/usr/bin/env bash
# ensure-venv.sh DIR REQUIREMENTS_FILE
#
# Builds the Python venv DIR from REQUIREMENTS_FILE unless a stamp inside DIR
# records the same requirements hash and Python version (idempotent; an
# interrupted install is redone, since the stamp is written last).
# PYTHON picks the interpreter (default python3).
set -euo pipefail

dir="$1"
requirements="$2"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$dir/.requirements.stamp"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
  exit 0
fi
printf '==> building %s from %s\n' "$dir" "$requirements"
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$PYTHON" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --upgrade pip
"$dir/bin/python" -m pip install --quiet -r "$requirements"
printf '%s\n' "$wanted" >"$stamp"
