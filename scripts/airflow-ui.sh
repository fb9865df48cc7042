#!/usr/bin/env bash
# make airflow-ui: Airflow's web UI on the local setup `make demo` left behind (its
# SQLite metadata database with the hourly DAG's run, the same settings and
# PostgreSQL warehouse), at http://127.0.0.1:${AIRFLOW_UI_PORT:-8793}. Every visitor is
# an admin (SimpleAuthManager, all admins): a local demo only, never a deployment.
# Ctrl-C stops it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-$ROOT/demo-data}"
PORT="${AIRFLOW_UI_PORT:-8793}"
if [[ ! -f "$DEMO_DIR/airflow/airflow-env.sh" ]]; then
  echo "no demo Airflow in $DEMO_DIR: run \`make demo\` first" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$DEMO_DIR/airflow/airflow-env.sh"
"$DEMO_AIRFLOW_VENV/bin/airflow" dags reserialize >/dev/null 2>&1 || true
echo "Airflow UI: http://127.0.0.1:$PORT/dags/courier_positions_hourly (Ctrl-C stops it)"
exec "$DEMO_AIRFLOW_VENV/bin/airflow" api-server --host 127.0.0.1 --port "$PORT"
