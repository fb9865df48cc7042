#!/usr/bin/env bash
# Checks of terraform/ as a deployment would run them, offline:
#
#   1. checkov               zero failed checks (skips only inline, with a reason)
#   2. pytest structural     tests/infra/test_terraform.py (python-hcl2)
#   3. terraform fmt -check     terraform/ and tests/infra/moto_apply/
#   4. per environment (dev, prod):
#        terraform init -backend=false -lockfile=readonly   provider from the
#            machine's filesystem mirror; the committed .terraform.lock.hcl
#            must match it
#        terraform validate
#        terraform test      terraform/tests/*.tftest.hcl: plan, then apply,
#            against mock_provider "aws", with the environment's terraform.tfvars
#
# The provider comes from the hashicorp/aws mirror that ships with the machine
# image (tests/infra/lib/terraform-mirror.sh finds it and writes a CLI config;
# missing terraform or mirror is a failure, never a skip). Terraform's working
# data goes to .tools/terraform/data-<env>, not into terraform/.
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
source "$ROOT/tests/infra/lib/terraform-mirror.sh"
tf_use_mirror "$ROOT"
if terraform fmt -check -recursive terraform && terraform fmt -check -recursive tests/infra/moto_apply; then
  echo "terraform fmt: all files formatted"
else
  echo "terraform fmt: the files above need 'terraform fmt -recursive <dir>'" >&2
  failed+=("terraform fmt")
fi

for env in dev prod; do
  dir="$ROOT/terraform/envs/$env"
  export TF_DATA_DIR="$ROOT/.tools/terraform/data-$env"
  log "terraform init -backend=false -lockfile=readonly ($env)"
  if ! terraform -chdir="$dir" init -backend=false -lockfile=readonly -no-color >"$ROOT/.tools/terraform/init-$env.log" 2>&1; then
    cat "$ROOT/.tools/terraform/init-$env.log" >&2
    echo "terraform init failed for $env (a provider change needs a new terraform/envs/$env/.terraform.lock.hcl)" >&2
    failed+=("init $env")
    continue
  fi
  log "terraform validate ($env)"
  terraform -chdir="$dir" validate -no-color || failed+=("validate $env")
done

# The two environments' tests are independent (own data directory, in-memory
# state): run them side by side, then show each one's output.
declare -A test_pids=()
for env in dev prod; do
  [[ -d "$ROOT/.tools/terraform/data-$env/providers" ]] || continue
  TF_DATA_DIR="$ROOT/.tools/terraform/data-$env" terraform -chdir="$ROOT/terraform/envs/$env" test -no-color \
    >"$ROOT/.tools/terraform/test-$env.log" 2>&1 &
  test_pids[$env]=$!
done
for env in dev prod; do
  [[ -n "${test_pids[$env]:-}" ]] || continue
  log "terraform test ($env: plan and apply against mock_provider \"aws\")"
  if wait "${test_pids[$env]}"; then
    grep -v '^  - ' "$ROOT/.tools/terraform/test-$env.log"
  else
    cat "$ROOT/.tools/terraform/test-$env.log"
    failed+=("test $env")
  fi
done
unset TF_DATA_DIR

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all Terraform checks passed"
