"""
### courier_positions_hourly

Every hour: compact the courier position stream into the Delta table, stage every
compactor run the warehouse has not loaded yet (normally just this hour's), check
it, insert it into the `positions` fact table with a ledger row per compactor run,
reconcile every hop, and refresh the gold tables for the dates the load touched.
SQL lives in `sql/` (Redshift dialect; PostgreSQL differences in `sql/postgres/`).

**Modes.** AWS (default): the compactor runs as an ECS task, its reports go to S3,
the warehouse is Redshift. Local (`COURIER_LOCAL_MODE=true` or the Variable
`courier_local_mode=true`): the compactor is a local process on the local stream and
table, its reports go to a local directory, the warehouse is PostgreSQL. Both use the
connection `courier_warehouse`. Settings: see `airflow-dags/README.md`.

**Which runs are loaded: the high-water mark is the ledger.** `load_ledger` holds one
row per compactor run inserted into `positions`, written in the load's own
transaction. Each DAG run asks `compactor runs --after-version <MAX(table_version)>`
and loads all of them, oldest first: a run whose report was lost is loaded by the next
DAG run, exactly once; a re-run finds nothing new and changes nothing.

**Tasks**

| task | what it does |
|---|---|
| `check_on_time` | a scheduled run that starts more than `late_after_minutes` after its interval end sends a "late" alert (Airflow 3 has no SLA); `dagrun_timeout` bounds the run itself |
| `migrate_warehouse` | applies the versioned warehouse migrations not applied yet (`sql/migrations/V<n>__*.sql`, local mode `sql/postgres/migrations/`; tables with comments on every column, the analyst role), each once, recorded in `schema_migrations` |
| `loaded_version` | the high-water mark: `MAX(table_version)` of `load_ledger` (0 when empty) |
| `choose_compactor` | branches to the ECS or the local compactor by mode |
| `ecs_settings` | (AWS) reads the ECS settings at run time |
| `compact_ecs` | (AWS) `EcsRunTaskOperator`: `compactor --output-uri <report> run`; reattaches after a worker restart, deferred, bounded by its timeout |
| `runs_ecs` | (AWS) `EcsRunTaskOperator`: `compactor --output-uri <report> runs --after-version <loaded_version>` |
| `compact_local` | (local) `compactor run`, again while its report says `backlog` (at most `backlog_max_rounds`); exit 3 or 4 fails the try, so it is retried |
| `runs_local` | (local) `compactor runs --after-version <loaded_version>` |
| `runs_to_load` | reads the reports (S3 or the local directory, never the logs), validates the list against them and passes on the load plan |
| `load_staging` | stages every planned run, oldest first, stamped with this DAG run (Redshift `COPY` of each manifest; local: the manifests' Parquet files via pyarrow), and records the runs with their report counts |
| `check_staging_row_count` | lake = staged: this run's staging rows = the sum of `rows_written` of its runs |
| `check_staging_no_null_keys` | no empty `event_id`, `courier_id` or timestamps |
| `check_staging_coordinates` | lat/lon and the optional measures in range |
| `load_positions` | insert-only, first copy wins, bounded by the batch's `recorded_at` range; queues the touched dates; writes `load_ledger` (one transaction) |
| `reconcile` | fails with the numbers when an identity of this run's ledger rows does not hold; warns about dead letters with their count and reasons |
| `check_fact_no_duplicates` | no `event_id` twice on the dates this run staged |
| `check_freshness` | lag-based: passes when the warehouse has caught up with the stream (no backlog left), else the newest loaded position must be within `freshness_max_lag_minutes` |
| `backlog_left`, `trigger_backlog_run` | after `reconcile`: when the compactor reported a backlog this run did not read (AWS mode: one ECS task per DAG run; local mode: `backlog_max_rounds` rounds used up), logs it and triggers another run of this DAG (queued behind this one by `max_active_runs=1`, conf `backlog_of`); otherwise skipped |
| `refresh_gold` | delete-then-insert `courier_daily` and `positions_hourly` for the queued dates (one transaction) |

Failures alert through the notifier `CourierAlert` (every task's and the DAG's
`on_failure_callback`): SNS in AWS mode, the log in local mode. Checks are not retried
(data does not fix itself); the other tasks are. Every task has an
`execution_timeout`; the DAG has a `dagrun_timeout`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.providers.common.sql.operators.sql import (
    SQLCheckOperator,
    SQLExecuteQueryOperator,
    SQLValueCheckOperator,
)
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import chain, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from courier_common import (
    AWS_CONN_ID,  # noqa: F401  (re-exported for tests and tools)
    DAG_DIR,
    REPO_ROOT,  # noqa: F401  (re-exported for tests and tools)
    WAREHOUSE_CONN_ID,
    CourierAlert,
    ecs_compactor_task,
    latest_report,
    local_mode,
    local_paths,
    migrate_warehouse_now,
    read_report,
    report_uri,
    run_compactor,
    send_alert,
    setting,
    warehouse_hook,
)
from courier_common import ecs_settings as _ecs_settings

log = logging.getLogger(__name__)

DAG_ID = "courier_positions_hourly"
SQL_DIR = DAG_DIR / "sql"

# Trigger rules by name (airflow.sdk has no TriggerRule before Airflow 3.1).
NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"

# Timeouts: every task has one; the DAG run as a whole has dagrun_timeout.
DEFAULT_TIMEOUT = timedelta(minutes=15)
COMPACT_TIMEOUT = timedelta(minutes=40)
CHECK_TIMEOUT = timedelta(minutes=5)
DAGRUN_TIMEOUT = timedelta(minutes=55)

# The ten Parquet columns, in the compactor's fixed order (COPY matches by
# position); event_date is a Delta partition column, not in the files.
PARQUET_COLUMNS = (
    "event_id",
    "courier_id",
    "lat",
    "lon",
    "recorded_at",
    "received_at",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "order_id",
)
REPORT_KEYS = ("run", "committed", "rows_written", "files_added", "table_version", "manifest")
RUN_KEYS = ("table_version", "run", "report", "files_added", "manifest")
# The counts of each compactor run the ledger keeps (the `report` of `compactor runs`).
COUNT_KEYS = ("records_read", "positions_decoded", "duplicates_dropped", "dead_lettered", "rows_written")


def manifest_uri(manifests_uri: str, table_version: int) -> str:
    """`<manifests>/v<table version, 20 digits>.json` (compactor contract; the manifests
    default to `<table>/_manifests`)."""
    return f"{manifests_uri.rstrip('/')}/v{int(table_version):020d}.json"


def _json(raw):
    return json.loads(raw) if isinstance(raw, (str, bytes)) else raw


def parse_report(raw) -> dict:
    """The JSON report of `compactor run`, validated."""
    report = dict(_json(raw))
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"compactor run report lacks {missing}: {report}")
    if int(report["rows_written"]) > 0 and not report["manifest"]:
        raise ValueError(f"run {report['run']} wrote rows but names no manifest: {report}")
    return report


def manifests_location() -> str | None:
    """Where the manifests must be: `manifest_uri`, else `<table_uri>/_manifests` (local
    mode: the local table's), else unknown (None)."""
    if local_mode():
        return local_paths()["manifest_uri"]
    table_uri = setting("table_uri")
    return setting("manifest_uri", f"{table_uri.rstrip('/')}/_manifests" if table_uri else None)


def _under(location: str, prefix: str) -> bool:
    if "://" not in prefix and "://" not in location:  # local paths: compare them resolved
        location, prefix = str(Path(location).resolve()), str(Path(prefix).resolve())
    return location.startswith(prefix.rstrip("/") + "/")


def plan_load(raw_runs, after_version: int, compact_reports=None, manifest_prefix: str | None = None) -> dict:
    """Validate the output of `compactor runs --after-version <after_version>` and turn it
    into the load plan: the runs oldest first with their counts, and the rows they wrote in
    total. `compact_reports`: this DAG run's `compactor run` report(s); every committed one
    must be listed with the same rows. With `manifest_prefix`, every manifest must be under
    it (the COPY reads what the environment's settings name)."""
    runs = _json(raw_runs)
    if not isinstance(runs, list):
        raise ValueError(f"compactor runs did not print a JSON list: {raw_runs!r}")
    plan = []
    for r in runs:
        missing = [k for k in RUN_KEYS if k not in r] + [
            f"report.{k}" for k in COUNT_KEYS if k not in (r.get("report") or {})
        ]
        if missing:
            raise ValueError(f"compactor runs entry lacks {missing}: {r}")
        version, rows, files = int(r["table_version"]), int(r["report"]["rows_written"]), int(r["files_added"])
        if version <= after_version:
            raise ValueError(f"run at table version {version} is not after the loaded version {after_version}")
        if (rows > 0 or files > 0) and not r["manifest"]:
            raise ValueError(f"run {r['run']} (table version {version}) added files but names no manifest: {r}")
        if files > 0 and manifest_prefix and not _under(r["manifest"], manifest_prefix):
            raise ValueError(f"manifest {r['manifest']} is not under {manifest_prefix}")
        counts = {k: int(r["report"][k]) for k in COUNT_KEYS}
        if "erased_skipped" in r["report"]:  # positions of erased couriers the run dropped (newer compactors)
            counts["erased_skipped"] = int(r["report"]["erased_skipped"])
        plan.append({"table_version": version, "run": int(r["run"]), **counts, "files_added": files,
                     "manifest": r["manifest"] if files > 0 else None,
                     "dead_letter_file": r["report"].get("dead_letter_file"),
                     "dead_letter_reasons": r["report"].get("dead_letter_reasons")})  # fmt: skip
    plan.sort(key=lambda r: r["table_version"])
    versions = [r["table_version"] for r in plan]
    if len(set(versions)) != len(versions):
        raise ValueError(f"table versions listed twice: {versions}")
    if compact_reports is not None:
        reports = _json(compact_reports)
        for report in [parse_report(x) for x in (reports if isinstance(reports, list) else [reports])]:
            if not report["committed"]:
                continue
            mine = [r for r in plan if r["table_version"] == int(report["table_version"])]
            if not mine:
                raise ValueError(
                    f"this DAG run's compactor run committed table version {report['table_version']}, "
                    f"but compactor runs after {after_version} lists only {versions}"
                )
            if mine[0]["rows_written"] != int(report["rows_written"]):
                raise ValueError(
                    f"run report says {report['rows_written']} rows, compactor runs says {mine[0]['rows_written']}"
                )
    return {
        "after_version": after_version,
        "table_version": max(versions, default=after_version),
        "runs": plan,
        "rows_written": sum(r["rows_written"] for r in plan),
    }


def _manifest_files(path: str) -> list[Path]:
    from urllib.parse import unquote, urlparse

    manifest = json.loads(Path(path).read_text())
    files = []
    for entry in manifest["entries"]:
        url = urlparse(entry["url"])
        if url.scheme not in ("", "file"):
            raise ValueError(f"local mode reads local files only, not {entry['url']}")
        file = Path(unquote(url.path))
        size = file.stat().st_size
        if size != entry["meta"]["content_length"]:
            raise ValueError(f"{file}: {size} bytes, manifest says {entry['meta']['content_length']}")
        files.append(file)
    return files


RUNS_STAGING_INSERT = (
    "INSERT INTO courier_staging.compactor_runs_staging (dag_run_id, table_version, compactor_run, records_read,"
    " positions_decoded, duplicates_dropped, dead_lettered, rows_written, files_added, manifest, erased_skipped)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def runs_staging_row(run_id: str, run: dict) -> tuple:
    return (run_id, run["table_version"], run["run"], *(run[k] for k in COUNT_KEYS[:4]), run["rows_written"],
            run["files_added"], run["manifest"], int(run.get("erased_skipped") or 0))  # fmt: skip


STAGING_CLEANUP = (
    "DELETE FROM {table} WHERE dag_run_id = %s OR staged_at < (now() AT TIME ZONE 'UTC') - INTERVAL '2 days'"
)


def _local_warehouse_connection():
    """A psycopg 3 connection to the courier_warehouse connection's PostgreSQL (its
    COPY FROM STDIN API; the postgres provider of Airflow 3.0 hands out psycopg2)."""
    import psycopg
    from airflow.sdk import Connection

    c = Connection.get(WAREHOUSE_CONN_ID)
    params = {"host": c.host, "port": c.port, "dbname": c.schema, "user": c.login, "password": c.password}
    return psycopg.connect(**{k: v for k, v in params.items() if v not in (None, "")})


def _load_local(plan: dict, run_id: str) -> int:
    """Local substitute for the Redshift COPY: read exactly the Parquet files listed in the
    manifests of the planned runs, oldest first, and stream them into positions_staging
    stamped with this DAG run and the compactor run (after deleting what an earlier try
    of this DAG run staged), recording the runs in compactor_runs_staging; one
    transaction. Returns the rows staged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ", ".join((*PARQUET_COLUMNS, "dag_run_id", "table_version"))
    loaded = 0
    conn = _local_warehouse_connection()
    try:
        with conn.cursor() as cur:
            for table in ("courier_staging.positions_staging", "courier_staging.compactor_runs_staging"):
                cur.execute(STAGING_CLEANUP.format(table=table), (run_id,))
            for run in plan["runs"]:
                files = _manifest_files(run["manifest"]) if run["files_added"] > 0 else []
                log.info("run %s (table version %s): %d files", run["run"], run["table_version"], len(files))
                for file in files:
                    table = pq.ParquetFile(file).read()  # the file alone: no partition columns from its path
                    if tuple(table.column_names) != PARQUET_COLUMNS:
                        raise ValueError(f"{file}: columns {table.column_names}, expected {list(PARQUET_COLUMNS)}")
                    # Timestamps are UTC instants; the warehouse stores UTC wall time.
                    for i, field in enumerate(table.schema):
                        if pa.types.is_timestamp(field.type):
                            table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp("us")))
                    stamp = (run_id, run["table_version"])
                    with cur.copy(f"COPY courier_staging.positions_staging ({columns}) FROM STDIN") as copy:
                        for batch in table.to_batches(max_chunksize=65536):
                            for row in zip(*(col.to_pylist() for col in batch.columns)):
                                copy.write_row((*row, *stamp))
                    loaded += table.num_rows
                cur.execute(RUNS_STAGING_INSERT, runs_staging_row(run_id, run))
        conn.commit()
    finally:
        conn.close()
    return loaded


def _check_warehouse_connection(hook_conn) -> None:
    """AWS mode: when Terraform named the Redshift workgroup/database, the courier_warehouse
    connection must point at them (a connection left over from another environment
    would load this environment's lake into the wrong warehouse)."""
    workgroup, database = setting("redshift_workgroup"), setting("redshift_database")
    extra = hook_conn.extra_dejson or {}
    if database and hook_conn.schema and hook_conn.schema != database:
        raise ValueError(f"courier_warehouse connects to database {hook_conn.schema!r}, expected {database!r}")
    if workgroup and extra.get("serverless_work_group") and extra["serverless_work_group"] != workgroup:
        raise ValueError(
            f"courier_warehouse uses workgroup {extra['serverless_work_group']!r}, expected {workgroup!r}"
        )


def _load_redshift(plan: dict, iam_role: str, run_id: str) -> None:
    import jinja2
    from airflow.sdk import Connection

    conn = Connection.get(WAREHOUSE_CONN_ID)
    _check_warehouse_connection(conn)
    sql = jinja2.Template((SQL_DIR / "copy_staging.sql").read_text()).render(
        runs=plan["runs"], iam_role=iam_role, run_id=run_id
    )
    conn.get_hook().run(sql, autocommit=True, split_statements=True)


LEDGER_COLUMNS = (
    "table_version", "compactor_run", "records_read", "positions_decoded", "duplicates_dropped", "dead_lettered",
    "rows_written", "rows_staged", "rows_inserted", "late_duplicates_skipped", "batch_duplicates_skipped",
    "erased_skipped",
)  # fmt: skip


def reconcile_ledger(rows: list[dict]) -> list[str]:
    """The identities every ledger row must satisfy, hop by hop; returns the broken ones
    with their numbers (empty: all hold).

    * stream = lake + duplicates + dead letters: every decoded position is written, dropped
      as a duplicate or as an erased courier's (`erased_skipped`), or dead-lettered. `dead_lettered` also counts undecodable records
      (which never became positions), so: rows_written + duplicates_dropped <=
      positions_decoded <= rows_written + duplicates_dropped + dead_lettered.
    * lake = staged: rows_written = rows_staged.
    * staged = inserted + skipped: rows_staged = rows_inserted + late_duplicates_skipped +
      batch_duplicates_skipped (rows_inserted is counted in positions, not derived).
    """
    broken = []
    for r in rows:
        who = f"compactor run {r['compactor_run']} (table version {r['table_version']})"
        erased = int(r.get("erased_skipped") or 0)  # positions of erased couriers the run dropped
        kept = r["rows_written"] + r["duplicates_dropped"] + erased
        if not kept <= r["positions_decoded"] <= kept + r["dead_lettered"]:
            broken.append(
                f"{who}: stream != lake + duplicates + dead letters: positions_decoded {r['positions_decoded']}, "
                f"rows_written {r['rows_written']} + duplicates_dropped {r['duplicates_dropped']} "
                f"+ dead_lettered {r['dead_lettered']}" + (f" + erased_skipped {erased}" if erased else "")
            )
        if r["rows_written"] != r["rows_staged"]:
            broken.append(f"{who}: lake != staged: rows_written {r['rows_written']}, rows_staged {r['rows_staged']}")
        skipped = r["late_duplicates_skipped"] + r["batch_duplicates_skipped"]
        if r["rows_staged"] != r["rows_inserted"] + skipped:
            broken.append(
                f"{who}: staged != inserted + skipped: rows_staged {r['rows_staged']}, rows_inserted "
                f"{r['rows_inserted']} + late_duplicates_skipped {r['late_duplicates_skipped']} "
                f"+ batch_duplicates_skipped {r['batch_duplicates_skipped']}"
            )
    return broken


def dead_letter_warning(dead: int, runs: list[dict]) -> str:
    """The warning for a load with dead letters: their count, their reasons and their
    files. The reasons come from each run's counts (the compactor counts them by rule,
    without values); only a run that carries none (written by an older compactor) has
    its file read, which the MWAA role may not do in AWS mode (the files hold raw
    payloads), so such a file's reasons show as unreadable there."""
    from collections import Counter

    reasons: Counter = Counter()
    unread = []
    for r in runs:
        if r.get("dead_letter_reasons") is not None:
            reasons.update({k: int(v) for k, v in r["dead_letter_reasons"].items()})
        elif r.get("dead_letter_file"):
            unread.append(r["dead_letter_file"])
    if unread:
        reasons.update(dead_letter_summary(unread))
    files = [r["dead_letter_file"] for r in runs if r.get("dead_letter_file")]
    by_reason = json.dumps(dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
    return f"{dead} positions or records dead-lettered; by reason: {by_reason} (files: {files})"


def dead_letter_summary(files: list[str], limit: int = 100_000) -> dict[str, int]:
    """Dead letters by reason, read from the runs' dead-letter files (JSON lines, local or
    S3); unreadable files are reported as such rather than failing the run."""
    from collections import Counter

    reasons: Counter = Counter()
    for uri in files:
        try:
            if uri.startswith("s3://"):
                from airflow.providers.amazon.aws.hooks.s3 import S3Hook

                bucket, _, key = uri.removeprefix("s3://").partition("/")
                text = S3Hook(aws_conn_id=AWS_CONN_ID).read_key(key, bucket_name=bucket)
            else:
                text = Path(uri.removeprefix("file://")).read_text()
        except Exception as e:  # noqa: BLE001  (a warning, not a failure)
            reasons[f"unreadable dead-letter file {uri}: {e}"] += 1
            continue
        for line in text.splitlines()[:limit]:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                reasons["unparsable dead-letter line"] += 1
                continue
            why = entry.get("reasons") or entry.get("error") or entry.get("reason") or [entry.get("kind", "?")]
            for reason in why if isinstance(why, list) else [why]:
                reasons[f"{entry.get('kind', '?')}: {reason}"] += 1
    return dict(reasons)


def late_by(run_type: str, data_interval_end: datetime | None, now: datetime, late_after: timedelta) -> timedelta | None:
    """How late a scheduled run starts (None: on time, or not a scheduled run: manual and
    backfill runs are late on purpose)."""
    if str(run_type).lower().removeprefix("dagruntype.") != "scheduled" or data_interval_end is None:
        return None
    late = now - data_interval_end
    return late if late > late_after else None


def freshness_verdict(backlog: bool, newest_received_at: datetime | None, now: datetime, max_lag: timedelta) -> tuple[bool, str]:
    """Lag-based freshness. Caught up (the compactor left no backlog and every run it listed
    is loaded): fresh, whatever the age of the data (a quiet night, an empty table). Behind:
    the newest loaded position must be younger than `max_lag`."""
    if not backlog:
        age = "no data yet" if newest_received_at is None else f"newest position received {now - newest_received_at} ago"
        return True, f"warehouse caught up with the stream ({age})"
    if newest_received_at is None:
        return False, "the compactor reports a backlog and the warehouse holds no position"
    lag = now - newest_received_at
    verdict = lag <= max_lag
    return verdict, f"the compactor reports a backlog; newest loaded position received {lag} ago (limit {max_lag})"


def plan_from_reports(run_id: str, loaded: int, local_runs=None, local_compacts=None) -> dict:
    """The load plan of DAG run `run_id` from the compactor's reports: in local mode the
    local tasks' reports (their XComs, read from their report files); in AWS mode the
    reports the ECS tasks `compact_ecs` and `runs_ecs` wrote under the reports location
    (S3; last try). `backlog`: the last `compactor run` of this DAG run says more is
    waiting in the stream (AWS mode: the one ECS task's report; local mode: the last
    round's, after `backlog_max_rounds`)."""
    if local_mode():
        raw_runs, compact_reports = local_runs, local_compacts
    else:
        raw_runs = latest_report(DAG_ID, run_id, "runs_ecs")
        compact_reports = latest_report(DAG_ID, run_id, "compact_ecs")
    if raw_runs is None:
        raise ValueError("no compactor runs report")
    plan = plan_load(raw_runs, loaded, compact_reports, manifests_location())
    reports = compact_reports if isinstance(compact_reports, list) else [compact_reports] if compact_reports else []
    plan["backlog"] = bool(reports and reports[-1].get("backlog"))
    plan["rounds"] = len(reports)
    return plan


def _courier_report_uri(dag_id, run_id, task_id, try_number, round_no=0) -> str:
    return report_uri(dag_id, run_id, task_id, try_number, round_no)


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAGRUN_TIMEOUT,
    on_failure_callback=CourierAlert("run failed"),
    tags=["courier", "warehouse", "hourly"],
    doc_md=__doc__,
    template_searchpath=[str(SQL_DIR)],
    user_defined_macros={
        "courier_local_mode": local_mode,
        "courier_report_uri": _courier_report_uri,
        "courier_setting": setting,
        "courier_utcnow": lambda: datetime.now(timezone.utc),
    },
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": DEFAULT_TIMEOUT,
        "on_failure_callback": CourierAlert("task failed"),
    },
)
def courier_positions_hourly():
    @task(retries=0, execution_timeout=CHECK_TIMEOUT)
    def check_on_time(dag_run=None, data_interval_end=None) -> bool:
        late = late_by(dag_run.run_type, data_interval_end, datetime.now(timezone.utc),
                       timedelta(minutes=int(setting("late_after_minutes"))))  # fmt: skip
        if late is not None:
            send_alert(f"[courier {setting('environment')}] {DAG_ID} late",
                       f"{DAG_ID} run {dag_run.run_id} started {late} after its interval end "
                       f"{data_interval_end}: an earlier run hung or the scheduler was down")  # fmt: skip
        return late is None

    @task
    def migrate_warehouse() -> list:
        """Apply the warehouse migrations not applied yet (sql/migrations, local mode:
        sql/postgres/migrations), each once, in its own transaction."""
        return migrate_warehouse_now()

    @task
    def loaded_version() -> int:
        """The last compactor table version loaded into the warehouse (0: none)."""
        (version,) = warehouse_hook().get_first("SELECT COALESCE(MAX(table_version), 0) FROM courier.load_ledger")
        log.info("warehouse has loaded compactor runs up to table version %s", version)
        return int(version)

    @task.branch
    def choose_compactor() -> str:
        return "compact_local" if local_mode() else "ecs_settings"

    @task
    def ecs_settings() -> dict:
        """ECS settings, read at run time (not at import)."""
        return _ecs_settings()

    ecs = ecs_settings()
    compact_ecs = ecs_compactor_task("compact_ecs", ecs, ["run"], execution_timeout=COMPACT_TIMEOUT)
    runs_ecs = ecs_compactor_task(
        "runs_ecs", ecs, ["runs", "--after-version", "{{ ti.xcom_pull(task_ids='loaded_version') }}"],
        execution_timeout=DEFAULT_TIMEOUT,
    )  # fmt: skip

    @task(execution_timeout=COMPACT_TIMEOUT)
    def compact_local(dag_run=None, ti=None) -> list:
        """`compactor run`, again while the report says backlog (bounded by
        backlog_max_rounds); each round's report is read from its own file."""
        p = local_paths()
        args = ["run", "--data-dir", p["data_dir"], "--stream-name", p["stream_name"],
                "--table-uri", p["table_uri"], "--manifest-uri", p["manifest_uri"]]  # fmt: skip
        if setting("compactor_max_positions"):
            args += ["--max-positions", str(int(setting("compactor_max_positions")))]
        reports = []
        rounds = max(1, int(setting("backlog_max_rounds")))
        for round_no in range(rounds):
            uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number, round_no)
            report = parse_report(run_compactor(*args, output_uri=uri))
            reports.append(report)
            log.info("compactor run report (round %d): %s", round_no, json.dumps(report))
            if not report.get("backlog"):
                break
            log.warning("compactor reports a backlog after round %d: running it again", round_no)
        else:
            log.warning("backlog left after %d rounds (backlog_max_rounds): the next DAG run goes on", rounds)
        return reports

    @task
    def runs_local(after_version: int, dag_run=None, ti=None) -> list:
        p = local_paths()
        return run_compactor(
            "runs", "--after-version", str(after_version), "--stream-name", p["stream_name"],
            "--table-uri", p["table_uri"], "--manifest-uri", p["manifest_uri"],
            output_uri=report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number),
        )  # fmt: skip

    @task(trigger_rule=NONE_FAILED_MIN_ONE_SUCCESS)
    def runs_to_load(dag_run=None, ti=None) -> dict:
        """The load plan, from the compactor's reports: XCom of the local tasks (read from
        their report files), or the S3 objects the ECS tasks wrote (last try)."""
        local = local_mode()
        plan = plan_from_reports(dag_run.run_id, int(ti.xcom_pull(task_ids="loaded_version")),
                                 ti.xcom_pull(task_ids="runs_local") if local else None,
                                 ti.xcom_pull(task_ids="compact_local") if local else None)  # fmt: skip
        for r in plan["runs"]:
            log.info("to load: run %s, table version %s, %s rows in %s files, %s",
                     r["run"], r["table_version"], r["rows_written"], r["files_added"], r["manifest"])  # fmt: skip
        log.info("%d runs after table version %s, %s rows%s", len(plan["runs"]), plan["after_version"],
                 plan["rows_written"], "; a backlog remains" if plan["backlog"] else "")  # fmt: skip
        return plan

    @task
    def load_staging(plan: dict, dag_run=None) -> int:
        if local_mode():
            rows = _load_local(plan, dag_run.run_id)
        else:
            _load_redshift(plan, setting("redshift_copy_role_arn"), dag_run.run_id)
            rows = plan["rows_written"]
        log.info("staged %d runs (table versions %s..%s)", len(plan["runs"]), plan["after_version"] + 1, plan["table_version"])
        return rows

    check_kwargs = {"conn_id": WAREHOUSE_CONN_ID, "retries": 0, "execution_timeout": CHECK_TIMEOUT}
    check_row_count = SQLValueCheckOperator(
        task_id="check_staging_row_count",
        sql="checks/staging_row_count.sql",
        pass_value="{{ ti.xcom_pull(task_ids='runs_to_load')['rows_written'] }}",
        **check_kwargs,
    )
    check_null_keys = SQLCheckOperator(
        task_id="check_staging_no_null_keys", sql="checks/staging_no_null_keys.sql", **check_kwargs
    )
    check_coordinates = SQLCheckOperator(
        task_id="check_staging_coordinates", sql="checks/staging_coordinates_in_range.sql", **check_kwargs
    )
    load_positions = SQLExecuteQueryOperator(
        task_id="load_positions", conn_id=WAREHOUSE_CONN_ID, sql="load_positions.sql", split_statements=True
    )

    @task(retries=0, execution_timeout=CHECK_TIMEOUT)
    def reconcile(plan: dict, dag_run=None) -> list:
        """Every hop of every compactor run this DAG run loaded, from the ledger."""
        hook = warehouse_hook()
        rows = [dict(zip(LEDGER_COLUMNS, r)) for r in hook.get_records(
            f"SELECT {', '.join(LEDGER_COLUMNS)} FROM courier.load_ledger WHERE dag_run_id = %s ORDER BY table_version",
            parameters=(dag_run.run_id,))]  # fmt: skip
        for r in rows:
            log.info("ledger: %s", ", ".join(f"{k} {r[k]}" for k in LEDGER_COLUMNS))
        broken = reconcile_ledger(rows)
        if broken:
            raise ValueError("the load does not reconcile:\n  " + "\n  ".join(broken))
        dead = sum(r["dead_lettered"] for r in rows)
        if dead:
            log.warning(dead_letter_warning(dead, plan["runs"]))
        return rows

    check_duplicates = SQLCheckOperator(
        task_id="check_fact_no_duplicates", sql="checks/fact_no_duplicate_event_ids.sql", **check_kwargs
    )

    @task(retries=0, execution_timeout=CHECK_TIMEOUT)
    def check_freshness(plan: dict) -> str:
        (newest,) = warehouse_hook().get_first("SELECT MAX(received_at) FROM courier.positions")
        now = datetime.now(timezone.utc).replace(tzinfo=None)  # the warehouse stores UTC wall time
        ok, why = freshness_verdict(plan["backlog"], newest, now,
                                    timedelta(minutes=float(setting("freshness_max_lag_minutes"))))  # fmt: skip
        if not ok:
            raise ValueError(f"warehouse not fresh: {why}")
        log.info("fresh: %s", why)
        return why

    @task.short_circuit(retries=0, execution_timeout=CHECK_TIMEOUT)
    def backlog_left(plan: dict, dag_run=None) -> bool:
        """After a load that reconciled: when the compactor reported a backlog this DAG run
        did not read (AWS mode: one ECS task per DAG run; local mode: after
        backlog_max_rounds rounds), trigger another run of this DAG to go on at once."""
        if not plan["backlog"]:
            log.info("no backlog: the compactor read the stream to its end")
            return False
        log.warning("the compactor reports a backlog after %d compactor run(s) in DAG run %s: triggering another "
                    "run of %s to load it (it starts when this one ends: max_active_runs=1)",
                    plan["rounds"], dag_run.run_id, DAG_ID)  # fmt: skip
        return True

    trigger_backlog_run = TriggerDagRunOperator(
        task_id="trigger_backlog_run",
        trigger_dag_id=DAG_ID,
        conf={"backlog_of": "{{ run_id }}"},
        # No logical date (an Airflow 3 run without a data interval; the DAG needs none):
        # Airflow 3.0.6 fails to trigger a cron-timetable DAG with one (its Execution API
        # infers the manual data interval from a non-pendulum datetime).
        logical_date=None,
        wait_for_completion=False,
        fail_when_dag_is_paused=False,
    )

    refresh_gold = SQLExecuteQueryOperator(
        task_id="refresh_gold", conn_id=WAREHOUSE_CONN_ID, sql="refresh_gold.sql", split_statements=True
    )

    on_time = check_on_time()
    create_tables = migrate_warehouse()
    version = loaded_version()
    branch = choose_compactor()
    local = compact_local()
    local_runs = runs_local(version)
    plan = runs_to_load()
    loaded = load_staging(plan)
    reconciled = reconcile(plan)
    fresh = check_freshness(plan)

    chain(create_tables, version)
    chain(branch, [ecs, local])
    chain(ecs, compact_ecs, runs_ecs)
    chain(version, runs_ecs)
    chain(local, local_runs)
    chain([runs_ecs, local_runs], plan)
    chain(loaded, [check_row_count, check_null_keys, check_coordinates], load_positions)
    chain(load_positions, [reconciled, check_duplicates, fresh], refresh_gold)
    chain(on_time, create_tables)
    chain(reconciled, backlog_left(plan), trigger_backlog_run)


courier_positions_hourly()
