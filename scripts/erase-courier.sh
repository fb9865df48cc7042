#!/usr/bin/env bash
# erase-courier.sh [--request-id ID] COURIER_ID...
#
# One command to erase couriers' positions from every tier of the local platform: runs
# the courier_erasure DAG once (`airflow dags test`, the deployed Airflow version, local
# mode) with conf {"courier_ids": [...], "request_id": ...}, then prints the request's
# row of courier.erasure_status. Exits non-zero when the run failed or the request is
# not complete; running it again with the same --request-id finishes what is left and
# removes nothing twice.
#
# The local setup is the one `make demo` writes (demo-data/airflow/airflow-env.sh: the
# stream, the Delta table, the PostgreSQL warehouse, the compactor binary);
# ERASE_ENV_FILE names another file of the same exports. The live position store is
# erased when AIRFLOW_CONN_COURIER_INGEST_API is set (ingest-api's URL with a dispatch
# key as the password, e.g. http://:KEY@127.0.0.1:8080); without it that tier is recorded
# as skipped ("no live store configured").
#
# AWS mode (MWAA) has no such script: trigger the DAG with its conf, see
# docs/operations.md ("Erasing a courier").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
usage() { echo "usage: $0 [--request-id ID] COURIER_ID..." >&2; exit 2; }

request_id=""
couriers=()
while (($#)); do
  case "$1" in
    --request-id) [[ $# -ge 2 ]] || usage; request_id="$2"; shift 2 ;;
    --request-id=*) request_id="${1#*=}"; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) couriers+=("$1"); shift ;;
  esac
done
((${#couriers[@]})) || usage

ENV_FILE="${ERASE_ENV_FILE:-$ROOT/demo-data/airflow/airflow-env.sh}"
if [[ ! -f "$ENV_FILE" ]]; then
  echo "no local setup at $ENV_FILE: run \`make demo\` first, or set ERASE_ENV_FILE" >&2
  exit 2
fi
# shellcheck source=/dev/null
source "$ENV_FILE"
# shellcheck source=scripts/airflow-env.sh
source "$ROOT/scripts/airflow-env.sh"
VENV="${DEMO_AIRFLOW_VENV:-$(airflow_venv "$(airflow_deployed_version)")}"
PY="$VENV/bin/python"

# Without --request-id the script names the request (printed, to finish it later if needed).
request_id="${request_id:-erasure-cli-$(date -u +%Y%m%dT%H%M%SZ)-$$}"
conf="$("$PY" -c 'import json, sys; r = sys.argv[1]; c = sys.argv[2:]
print(json.dumps({"courier_ids": c, **({"request_id": r} if r else {})}))' "$request_id" "${couriers[@]}")"
mkdir -p "$AIRFLOW_HOME"
log="$AIRFLOW_HOME/erase-$(date -u +%Y%m%dT%H%M%SZ).log"
"$VENV/bin/airflow" db migrate >"$log.migrate" 2>&1 || { cat "$log.migrate" >&2; exit 1; }
echo "erasure request $request_id: airflow dags test courier_erasure --conf '$conf' (task logs: $log)"
failed=""
"$VENV/bin/airflow" dags test courier_erasure -c "$conf" >"$log" 2>&1 || failed=1

rc=0
"$PY" - "$request_id" <<'PY' || rc=$?
import json, os, sys

import psycopg

request_id = sys.argv[1]
url = os.environ["AIRFLOW_CONN_COURIER_WAREHOUSE"]
with psycopg.connect(url) as conn:
    cur = conn.execute("SELECT * FROM courier.erasure_status WHERE request_id = %s", (request_id,))
    names = [d.name for d in cur.description]
    row = cur.fetchone()
    if row is None:
        print(f"no erasure request {request_id!r} in the ledger")
        sys.exit(1)
    status = dict(zip(names, row))
    tiers = conn.execute("SELECT tier, status, rows_removed, done_at FROM courier.erasure_tiers"
                         " WHERE request_id = %s ORDER BY tier", (request_id,)).fetchall()
print(json.dumps(status, default=str, indent=2))
for tier, state, n, at in tiers:
    print(f"  {tier:<13} {state:<8} {n:>8} removed  at {at}")
sys.exit(0 if status["status"] == "complete" else 1)
PY
if [[ -n "$failed" ]] || ((rc != 0)); then
  echo "FAILED: the erasure is not complete (task logs: $log); run again with --request-id to finish it" >&2
  grep -E "ERROR|Error|failed" "$log" | tail -n 20 >&2 || true
  exit 1
fi
echo "done: erased from every tier (the old lake files go with the vacuum by vacuum_deadline above)"
