#!/usr/bin/env bash
# test-airflow-ui.sh: Airflow's web UI in headless Chromium (tests/e2e/test_airflow_ui.py)
# on the deployed Airflow version: the hourly DAG's run, made in local mode, shows as
# successful. Installs what it needs, idempotently: chromium, chromium-driver and
# fonts-dejavu-core when missing (apt-get, as root or through sudo), .tools/e2e-venv
# (tests/e2e/requirements.txt) and the Airflow venv (scripts/airflow-env.sh).
# Needs target/debug/compactor (make test builds it first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/airflow-env.sh
source "$ROOT/scripts/airflow-env.sh"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
  printf '==> installing %s\n' "${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "test-airflow-ui.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[[ -x target/debug/compactor ]] || { echo "missing target/debug/compactor: run \`cargo build --workspace\` first" >&2; exit 1; }

scripts/ensure-venv.sh .tools/e2e-venv tests/e2e/requirements.txt
version="${AIRFLOW_UI_VERSION:-$(airflow_deployed_version)}"
venv="$(airflow_venv "$version")"
ensure_postgres
echo "==> Airflow $version web UI in headless Chromium"
AIRFLOW_VENV="$venv" COMPACTOR_BIN="$ROOT/target/debug/compactor" INGEST_API_BIN="$ROOT/target/debug/ingest-api" \
  CHROMIUM="$(command -v chromium)" CHROMEDRIVER="$(command -v chromedriver)" \
  .tools/e2e-venv/bin/python tests/e2e/test_airflow_ui.py
