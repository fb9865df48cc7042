#!/usr/bin/env bash
# test-airflow.sh [PYTEST ARGS...]
#
# Runs the Airflow DAG tests (airflow-dags/tests): DagBag integrity, the
# warehouse SQL (sqlglot Redshift parse + PostgreSQL runs) and the end-to-end
# dag.test() runs in local mode against PostgreSQL with the real ingest-api and
# compactor binaries (target/debug, built by `cargo build`; the end-to-end
# tests are skipped without them).
#
# Idempotent: builds .tools/airflow-venv once (scripts/ensure-venv.sh), uses a
# fresh temporary AIRFLOW_HOME with a migrated SQLite metadata database, and
# starts the local PostgreSQL cluster if 127.0.0.1:5432 is not accepting
# connections. Each test creates and drops its own database.
# COURIER_TEST_PG_URL overrides the admin URL
# (default postgresql://postgres@127.0.0.1:5432/postgres).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/airflow-venv"
cd "$ROOT"

bash "$ROOT/scripts/ensure-venv.sh" "$VENV" "$ROOT/airflow-dags/requirements-test.txt"

if ! pg_isready -q -h 127.0.0.1; then
  if [[ ! -d /etc/postgresql ]] || [[ -z "$(ls /etc/postgresql)" ]]; then
    echo "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster is installed" >&2
    exit 1
  fi
  echo "==> starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 && break
    sleep 0.2
  done
  pg_isready -h 127.0.0.1
fi

AIRFLOW_HOME="$(mktemp -d -t airflow-home.XXXXXX)"
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW_HOME
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/airflow-dags"
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-WARNING}"
# The tests set their own; never inherit a developer's.
unset COURIER_LOCAL_MODE AIRFLOW_CONN_COURIER_WAREHOUSE AIRFLOW_VAR_COURIER_LOCAL_MODE

echo "==> airflow db migrate (SQLite in $AIRFLOW_HOME)"
"$VENV/bin/airflow" db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/migrate.log" >&2; exit 1; }

echo "==> pytest airflow-dags/tests"
"$VENV/bin/python" -m pytest -p no:cacheprovider -q airflow-dags/tests "$@"
