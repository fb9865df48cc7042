# shellcheck shell=bash
# Sourced by scripts/test-airflow.sh, scripts/demo.sh and scripts/airflow-ui.sh: which
# Airflow versions we support, their venvs, and the local PostgreSQL.
#
# The deployed version is named once, by Terraform: the default of `airflow_version` in
# terraform/modules/orchestration. Each supported version has its pinned requirements,
# airflow-dags/requirements-airflow-<version>.txt (the deployed one: MWAA's provider
# versions and constraints), and its venv .tools/airflow-<version>-venv built from it
# by scripts/ensure-venv.sh (idempotent) on the Python the file names (`# python: X.Y`).

AIRFLOW_ENV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

airflow_deployed_version() {
  local v
  v="$(cat "$AIRFLOW_ENV_ROOT"/terraform/modules/orchestration/*.tf |
    awk '/variable "airflow_version"/{f=1} f && /default/{gsub(/[^0-9.]/, "", $0); print; exit}')"
  if [[ -z "$v" ]]; then
    echo "cannot read the default of airflow_version in terraform/modules/orchestration" >&2
    return 1
  fi
  if [[ ! -f "$AIRFLOW_ENV_ROOT/airflow-dags/requirements-airflow-$v.txt" ]]; then
    echo "Terraform deploys Airflow $v, but airflow-dags/requirements-airflow-$v.txt does not exist:" >&2
    echo "add it (MWAA's provider versions for $v) before deploying that version" >&2
    return 1
  fi
  echo "$v"
}

airflow_newest_version() {
  ls "$AIRFLOW_ENV_ROOT"/airflow-dags/requirements-airflow-*.txt |
    sed 's/.*requirements-airflow-\(.*\)\.txt/\1/' | sort -V | tail -n1
}

# airflow_venv VERSION: builds .tools/airflow-VERSION-venv when needed; prints its path.
airflow_venv() {
  local version="$1" requirements venv python_version python=python3 candidate
  requirements="$AIRFLOW_ENV_ROOT/airflow-dags/requirements-airflow-$version.txt"
  venv="$AIRFLOW_ENV_ROOT/.tools/airflow-$version-venv"
  python_version="$(sed -n 's/^# python: *\([0-9.]*\).*/\1/p' "$requirements")"
  if [[ -n "$python_version" ]]; then
    for candidate in "python$python_version" "$HOME"/.pyenv/versions/"$python_version"*/bin/python"$python_version"; do
      if "$candidate" -c '' 2>/dev/null; then python="$candidate"; break; fi
    done
    [[ "$python" == python3 ]] && echo "warning: Python $python_version not found, using $(python3 --version)" >&2
  fi
  PYTHON="$python" bash "$AIRFLOW_ENV_ROOT/scripts/ensure-venv.sh" "$venv" "$requirements" >&2
  echo "$venv"
}

# ensure_postgres: starts the local cluster when 127.0.0.1:5432 does not answer.
ensure_postgres() {
  pg_isready -q -h 127.0.0.1 && return 0
  if [[ ! -d /etc/postgresql ]] || [[ -z "$(ls /etc/postgresql)" ]]; then
    echo "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster is installed" >&2
    return 1
  fi
  echo "==> starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 && return 0
    sleep 0.1
  done
  pg_isready -h 127.0.0.1
}
