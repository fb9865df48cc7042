#!/usr/bin/env bash
# test-airflow.sh [PYTEST ARGS...]
#
# Runs the Airflow DAG tests (airflow-dags/tests) on every Airflow version we support:
# the deployed one and the newest 3.x. DagBag integrity, the warehouse SQL (sqlfluff's
# Redshift dialect, sqlglot, PostgreSQL runs) and the end-to-end dag.test() runs in
# local mode against PostgreSQL with the real ingest-api and compactor binaries
# (target/debug, built by `cargo build`).
#
# Versions: the deployed one is named once, by Terraform (the default of
# `airflow_version` in terraform/modules/orchestration); the newest is the highest
# airflow-dags/requirements-airflow-<version>.txt. Each version has its pinned
# requirements file (the deployed one: MWAA's provider versions and constraints) and
# its venv .tools/airflow-<version>-venv (scripts/ensure-venv.sh: built once, rebuilt
# when the file changes), on the Python the file names (`# python: X.Y`, MWAA's).
# On the newest version the dag.test() runs against PostgreSQL are a forward-compatibility
# sample (the tests marked `every_version`; conftest.py deselects the rest there, and
# COURIER_TEST_EVERY_RUN=1 keeps them all); everything runs on the deployed version.
# AIRFLOW_TEST_VERSIONS="3.3.2" picks versions by hand. Without pytest arguments it
# then runs scripts/test-airflow-ui.sh (the web UI in headless Chromium).
#
# Idempotent: a fresh temporary AIRFLOW_HOME with a migrated SQLite metadata database
# per version; starts the local PostgreSQL cluster if 127.0.0.1:5432 is not accepting
# connections. Each test creates and drops its own database.
# COURIER_TEST_PG_URL overrides the admin URL
# (default postgresql://postgres@127.0.0.1:5432/postgres).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/airflow-env.sh
source "$ROOT/scripts/airflow-env.sh"

deployed="$(airflow_deployed_version)"
newest="$(airflow_newest_version)"
read -r -a versions <<<"${AIRFLOW_TEST_VERSIONS:-$(printf '%s\n' "$deployed" "$newest" | awk '!seen[$0]++' | xargs)}"
ensure_postgres

export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/airflow-dags"
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-WARNING}"
# The tests set their own; never inherit a developer's.
unset COURIER_LOCAL_MODE AIRFLOW_CONN_COURIER_WAREHOUSE AIRFLOW_VAR_COURIER_LOCAL_MODE

homes=()
trap 'rm -rf "${homes[@]}"' EXIT
for version in "${versions[@]}"; do
  venv="$(airflow_venv "$version")"

  AIRFLOW_HOME="$(mktemp -d -t "airflow-home-$version.XXXXXX")"
  homes+=("$AIRFLOW_HOME")
  export AIRFLOW_HOME
  echo "==> Airflow $version$([[ "$version" == "$deployed" ]] && echo ' (deployed by Terraform)'): airflow db migrate (SQLite in $AIRFLOW_HOME)"
  "$venv/bin/airflow" db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/migrate.log" >&2; exit 1; }
  "$venv/bin/airflow" version | grep -qx "$version" || { echo "venv $venv does not run Airflow $version" >&2; exit 1; }
  # The DAGs serialized into the metadata database, as the DAG processor (MWAA's too) has
  # them: a task that triggers a DAG run (trigger_backlog_run) needs its DAG there.
  PYTHONPATH="$ROOT/airflow-dags" "$venv/bin/airflow" dags reserialize >"$AIRFLOW_HOME/reserialize.log" 2>&1 ||
    { cat "$AIRFLOW_HOME/reserialize.log" >&2; exit 1; }

  echo "==> Airflow $version: pytest airflow-dags/tests"
  COURIER_TEST_AIRFLOW_VERSION="$version" COURIER_DEPLOYED_AIRFLOW_VERSION="$deployed" \
    "$venv/bin/python" -m pytest -p no:cacheprovider -q airflow-dags/tests "$@"
done
echo "==> Airflow DAG tests passed on: ${versions[*]}"
# The web UI in headless Chromium (deployed version); skipped when pytest arguments
# select a subset of the tests.
if (($# == 0)); then
  AIRFLOW_UI_VERSION="$deployed" bash "$ROOT/scripts/test-airflow-ui.sh"
fi
