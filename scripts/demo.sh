#!/usr/bin/env bash
# make demo: the ingestion path end to end on one machine, no AWS, no Docker.
#
# Builds ingest-api and the courier simulator, starts the service on the
# embedded local stream, runs a simulated fleet against it (with some
# duplicates, late and invalid samples on purpose), asks for a courier's latest
# position, stops the service with SIGTERM, runs the compactor once (stream ->
# Delta table), then runs the hourly Airflow DAG in local mode (the deployed
# Airflow version, PostgreSQL as the warehouse, started when it is down) to load
# the warehouse, and reconciles every hop: acknowledged = in the stream = rows
# written + duplicates dropped + dead-lettered = rows in the table = rows in the
# warehouse, each event id once; prints the load ledger and a gold table.
# Exits non-zero if anything does not reconcile.
#
# Afterwards `make airflow-ui` opens Airflow's web UI on the same local setup
# (the DAG and its run). DEMO_DB names the PostgreSQL database (default
# courier_demo, recreated on each run); DEMO_SKIP_WAREHOUSE=1 stops at the lake;
# DEMO_COMPACTOR_BIN runs another compactor binary (default target/debug/compactor;
# airflow-dags/tests/test_demo.py passes one whose reports lie, to check that the demo
# then fails with the numbers).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO_DIR="${DEMO_DIR:-$ROOT/demo-data}"
PORT="${DEMO_PORT:-8080}"
COURIERS="${DEMO_COURIERS:-50}"
RUN_SECS="${DEMO_SECONDS:-30}"
BIN="$ROOT/target/debug/ingest-api"
COMPACTOR="${DEMO_COMPACTOR_BIN:-$ROOT/target/debug/compactor}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# One build of every binary (a narrower package set would resolve features
# differently and rebuild). `make test` passes DEMO_SKIP_BUILD=1: its
# `cargo test --workspace` has just built the same binaries.
if [[ -z "${DEMO_SKIP_BUILD:-}" ]]; then
  say "building ingest-api, courier-sim and compactor"
  cargo build --locked --quiet --workspace --bins
fi

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
read -r TOKEN LINE < <("$BIN" keys create demo-app 2>/dev/null | awk '/^token:/{t=$2} /^line:/{l=$2} END{print t, l}')
echo "$LINE" >"$DEMO_DIR/api-keys"

say "starting ingest-api on 127.0.0.1:$PORT (local stream in $DEMO_DIR)"
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DEMO_DIR" \
  --api-keys-file "$DEMO_DIR/api-keys" >"$DEMO_DIR/ingest-api.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then cat "$DEMO_DIR/ingest-api.log"; exit 1; fi
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

say "live map while the fleet runs: http://127.0.0.1:$PORT/map#token=$TOKEN"
say "running the courier simulator: $COURIERS couriers for $RUN_SECS s (1 % duplicates, 2 % late, 1 % invalid)"
"$ROOT/target/debug/courier-sim" --url "http://127.0.0.1:$PORT" --token "$TOKEN" \
  --couriers "$COURIERS" --interval-ms 1000 --duration-secs "$RUN_SECS" --batch-size 5 --seed 7 \
  --json >"$DEMO_DIR/sim-summary.json"
python3 - "$DEMO_DIR" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/sim-summary.json"))
rejected = sum(s["rejected_by_field"].values())
print(f"sent {s['samples_sent']} samples in {s['requests']} requests: accepted {s['accepted']}, rejected {rejected} "
      f"{s['rejected_by_field']}, {s['duplicates_sent']} duplicates and {s['out_of_order_sent']} late samples on purpose, "
      f"{s['retries']} retries; {s['accepted_per_sec']:.0f} positions/s")
PY

say "latest position of courier-00000 (GET /v1/couriers/courier-00000/position)"
curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/couriers/courier-00000/position"
echo

say "stopping ingest-api with SIGTERM (it flushes and exits 0)"
kill -TERM "$PID"
wait "$PID"
trap - EXIT

"$BIN" stream-stats --data-dir "$DEMO_DIR" >"$DEMO_DIR/stream-stats.json"

say "running the compactor once: stream -> Delta table (exactly once, duplicates dropped)"
"$COMPACTOR" run --data-dir "$DEMO_DIR" --stream-name courier-positions \
  --table-uri "$DEMO_DIR/positions" >"$DEMO_DIR/compactor-report.json" 2>"$DEMO_DIR/compactor.log"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"run {r['run']}: read {r['records_read']} records, {r['positions_decoded']} positions; dropped {r['duplicates_dropped']} duplicates, dead-lettered {r['dead_lettered']}; wrote {r['rows_written']} rows in {r['files_added']} files (table version {r['table_version']})\")" "$DEMO_DIR/compactor-report.json"

scripts/ensure-venv.sh "$ROOT/.tools/demo-venv" scripts/requirements-demo.txt
if [[ -n "${DEMO_SKIP_WAREHOUSE:-}" ]]; then
  say "reconciling: API -> stream -> Delta table"
  "$ROOT/.tools/demo-venv/bin/python" scripts/demo_summary.py "$DEMO_DIR" "$DEMO_DIR/positions"
  say "done: every acknowledged position is in the Delta table exactly once"
  exit 0
fi

# shellcheck source=scripts/airflow-env.sh
source "$ROOT/scripts/airflow-env.sh"
AIRFLOW_VERSION="$(airflow_deployed_version)"
DB="${DEMO_DB:-courier_demo}"
say "loading the warehouse: the hourly DAG on Airflow $AIRFLOW_VERSION (the deployed version), local mode, PostgreSQL database $DB"
AIRFLOW_VENV="$(airflow_venv "$AIRFLOW_VERSION")"
ensure_postgres
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\""
# The demo's Airflow: SQLite metadata in $DEMO_DIR/airflow, settings in airflow-env.sh
# (sourced by `make airflow-ui` too).
mkdir -p "$DEMO_DIR/airflow"
cat >"$DEMO_DIR/airflow/airflow-env.sh" <<ENV
export AIRFLOW_HOME="$DEMO_DIR/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/airflow-dags"
export PYTHONPATH="$ROOT/airflow-dags"  # courier_common, as the scheduler and MWAA have it
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING
export COURIER_LOCAL_MODE=true
export COURIER_ENVIRONMENT=demo
export COURIER_DATA_DIR="$DEMO_DIR"
export COURIER_STREAM_NAME=courier-positions
export COURIER_TABLE_URI="$DEMO_DIR/positions"
export COURIER_COMPACTOR_BIN="$COMPACTOR"
export AIRFLOW_CONN_COURIER_WAREHOUSE="postgresql://postgres@127.0.0.1:5432/$DB"
export DEMO_AIRFLOW_VENV="$AIRFLOW_VENV"
ENV
dag_failed=""
(
  # shellcheck source=/dev/null
  source "$DEMO_DIR/airflow/airflow-env.sh"
  "$AIRFLOW_VENV/bin/airflow" db migrate >"$DEMO_DIR/airflow/migrate.log" 2>&1 ||
    { cat "$DEMO_DIR/airflow/migrate.log" >&2; exit 2; }
  # The DAGs serialized as the DAG processor has them (the UI shows them; a backlog run is
  # triggered through them).
  "$AIRFLOW_VENV/bin/airflow" dags reserialize >>"$DEMO_DIR/airflow/migrate.log" 2>&1 ||
    { cat "$DEMO_DIR/airflow/migrate.log" >&2; exit 2; }
  logical_date="$(date -u +%Y-%m-%dT%H:00:00+00:00)"
  echo "airflow dags test courier_positions_hourly $logical_date (task logs: $DEMO_DIR/airflow/dag-test.log)"
  "$AIRFLOW_VENV/bin/airflow" dags test courier_positions_hourly "$logical_date" >"$DEMO_DIR/airflow/dag-test.log" 2>&1
) || { rc=$?; ((rc == 2)) && exit 1; dag_failed=1; }
if [[ -n "$dag_failed" ]]; then
  # The failed tasks and their numbers (a check's values, a reconcile's identities, the alerts).
  echo "the hourly DAG failed (task logs: $DEMO_DIR/airflow/dag-test.log):" >&2
  grep -E -A12 "does not reconcile|Test failed|Pass value|not fresh|COURIER ALERT" "$DEMO_DIR/airflow/dag-test.log" |
    grep -v -E '^\s*$' | head -n 60 >&2 || tail -n 60 "$DEMO_DIR/airflow/dag-test.log" >&2
fi

say "reconciling: API -> stream -> Delta table -> warehouse"
summary_failed=""
"$ROOT/.tools/demo-venv/bin/python" scripts/demo_summary.py "$DEMO_DIR" "$DEMO_DIR/positions" \
  "postgresql://postgres@127.0.0.1:5432/$DB" || summary_failed=1
if [[ -n "$dag_failed$summary_failed" ]]; then
  echo >&2
  echo "FAILED: the demo does not reconcile:${dag_failed:+ the hourly DAG failed (above);}${summary_failed:+ the counts above marked MISMATCH differ}" >&2
  exit 1
fi

say "done: every acknowledged position is in the Delta table and in the warehouse exactly once"
echo "Open the DAG and its run in Airflow's web UI: make airflow-ui   (then http://127.0.0.1:${AIRFLOW_UI_PORT:-8793})"
