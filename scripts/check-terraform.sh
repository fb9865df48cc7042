#!/usr/bin/env bash
# Static checks of terraform/ that work without any Terraform provider
# (our CI machines cannot download one, so `terraform validate` cannot run):
#
#   1. checkov               zero failed checks (skips only inline, with a reason)
#   2. pytest structural     tests/infra/test_terraform.py (python-hcl2)
#   3. terraform fmt -check  when a terraform binary is on PATH
#
# Tools live in two venvs under .tools/ at the repository root (checkov pins
# bc-python-hcl2, which installs under the same module name as python-hcl2,
# so they cannot share one). A venv is (re)built when it is missing or when
# its requirements file (or the Python version) changed since it was built.
#
# Usage: scripts/check-terraform.sh        (from anywhere; PYTHON=python3.12 to pick the interpreter)
# Exit status: 0 when every check passed, 1 otherwise (all checks still run).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '\n==> %s\n' "$*"; }

"$ROOT/scripts/ensure-venv.sh" "$TOOLS/checkov-venv" "$ROOT/tests/infra/requirements-checkov.txt"
"$ROOT/scripts/ensure-venv.sh" "$TOOLS/hcl2-venv" "$ROOT/tests/infra/requirements-hcl2.txt"

failed=()
cd "$ROOT"

log "checkov $("$TOOLS/checkov-venv/bin/checkov" --version)"
if ! "$TOOLS/checkov-venv/bin/checkov" -d terraform --framework terraform --compact --quiet --skip-download; then
  failed+=("checkov")
fi

log "structural tests (pytest + python-hcl2)"
if ! TERRAFORM_CHECKS_STRICT=1 "$TOOLS/hcl2-venv/bin/python" -m pytest tests/infra -q -p no:cacheprovider; then
  failed+=("pytest")
fi

log "terraform fmt -check"
if command -v terraform >/dev/null 2>&1; then
  # A TF_CLI_CONFIG_FILE pointing at a missing file only adds a warning.
  if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then
    unset TF_CLI_CONFIG_FILE
  fi
  if terraform fmt -check -recursive terraform; then
    echo "terraform fmt: all files formatted"
  else
    echo "terraform fmt: the files above need 'terraform fmt -recursive terraform'" >&2
    failed+=("terraform fmt")
  fi
else
  echo "skipped: no terraform binary on PATH (install Terraform >= 1.6 to check formatting)"
fi

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all Terraform checks passed"
