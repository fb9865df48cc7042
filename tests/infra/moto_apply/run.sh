#!/usr/bin/env bash
# Apply every module moto_server can emulate, run ingest-api and compactor on
# what apply created, destroy, check nothing is left (see run.py).
# Needs: make tools (.tools/test-venv with moto_server and boto3), and
# target/debug/ingest-api and target/debug/compactor (cargo build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
source "$ROOT/tests/infra/lib/terraform-mirror.sh"
tf_use_mirror "$ROOT"
exec "$ROOT/.tools/test-venv/bin/python" "$ROOT/tests/infra/moto_apply/run.py" "$@"
