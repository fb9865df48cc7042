"""
### courier_reload

Reload the warehouse's raw positions (`courier.positions`) for a range of UTC dates
from the lake, e.g. after a bad deploy or a manual fix. Triggered, never scheduled, with
the params `start_date` and `end_date` (`event_date`s, inclusive, `YYYY-MM-DD`).

| task | what it does |
|---|---|
| `migrate_warehouse` | applies the warehouse migrations not applied yet (as the hourly DAG does) |
| `reload_positions` | the table version the warehouse has loaded up to (`MAX(table_version)` of `courier.load_ledger`): lists the Parquet files of the dates' partitions active at that version from the Delta log; stages their rows stamped with this DAG run (AWS: a COPY manifest of those files and Redshift `COPY`; local: pyarrow and `COPY FROM STDIN`); then in one transaction, after `LOCK courier.load_ledger` and a check that the warehouse still stands at that version, replaces the dates' rows in `courier.positions` (first copy of an event_id wins), replaces their rows in `courier.load_ledger_dates` by one per date with the lake's rows, the rows inserted and the copies skipped, queues gold for them and records the reload in `courier.reloads` (`sql/reload_positions.sql`). Refuses while an erasure request has its lake tier done and its warehouse tier not (the reload would read rows the erasure is about to remove from the warehouse and miscount them) |
| `refresh_gold` | recomputes the gold tables for the queued dates (`sql/refresh_gold.sql`) |
| `check_reloaded_dates` | the daily lake-versus-warehouse check, for the reloaded dates: lake rows per date (Delta log) = rows in `courier.positions` + copies skipped, and `courier.positions` = what the ledger says was inserted |

Idempotent: running it twice gives the same rows (only `loaded_at` differs). Rows the
lake holds at a later version (compactor runs the hourly DAG has not loaded yet) are
loaded by the hourly DAG as usual.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import Param, chain, dag, task

from courier_common import (
    DAG_DIR,
    WAREHOUSE_CONN_ID,
    CourierAlert,
    lake_active_files,
    lake_rows_by_date,
    lake_warehouse_mismatches,
    local_mode,
    local_paths,
    migrate_warehouse_now,
    reports_base,
    setting,
    sql_statements,
    warehouse_hook,
)

log = logging.getLogger(__name__)

DAG_ID = "courier_reload"
SQL_DIR = DAG_DIR / "sql"
MAX_DAYS = 400
RELOAD_TIMEOUT = timedelta(hours=2)
# The ten Parquet columns in the compactor's order (as courier_positions_hourly.PARQUET_COLUMNS).
PARQUET_COLUMNS = ("event_id", "courier_id", "lat", "lon", "recorded_at", "received_at", "accuracy_m", "speed_mps",
                   "heading_deg", "order_id")  # fmt: skip


def date_range(params: dict) -> list[date]:
    """The dates from start_date to end_date (inclusive), validated."""
    try:
        start = date.fromisoformat(str((params or {}).get("start_date")))
        end = date.fromisoformat(str((params or {}).get("end_date")))
    except ValueError:
        raise ValueError(f"start_date and end_date: give two dates as YYYY-MM-DD, not {params}") from None
    if end < start:
        raise ValueError(f"end_date {end} is before start_date {start}: give an inclusive range, oldest first")
    days = (end - start).days + 1
    if days > MAX_DAYS:
        raise ValueError(f"{days} days: reload at most {MAX_DAYS} dates per run (split the range)")
    return [start + timedelta(days=i) for i in range(days)]


def lake_table_uri() -> str:
    uri = local_paths()["table_uri"] if local_mode() else setting("table_uri")
    if not uri:
        raise ValueError("no table_uri setting: cannot read the lake")
    return uri.rstrip("/")


def files_of_dates(table_uri: str, version: int, dates: list[date]) -> list[dict]:
    """The data files of the dates' partitions active at `version`: path, size, rows."""
    wanted = {d.isoformat() for d in dates}
    files = []
    for path, (partition, stats, size) in sorted(lake_active_files(table_uri, version).items()):
        if partition.get("event_date") in wanted:
            rows = int(json.loads(stats)["numRecords"]) if stats else None
            files.append({"path": path, "size": size, "rows": rows, "event_date": partition["event_date"]})
    return files


def pending_erasures(cur) -> list[str]:
    """Erasure requests whose lake tier is done and warehouse tier not."""
    cur.execute("SELECT t.request_id FROM courier.erasure_tiers AS t WHERE t.tier = 'lake' AND t.request_id NOT IN"
                " (SELECT w.request_id FROM courier.erasure_tiers AS w WHERE w.tier = 'warehouse') ORDER BY 1")  # fmt: skip
    return [r[0] for r in cur.fetchall()]


def loaded_version(cur) -> int:
    cur.execute("SELECT COALESCE(MAX(table_version), 0) FROM courier.load_ledger")
    return int(cur.fetchone()[0])


def _local_warehouse_connection():
    """psycopg 3 (COPY FROM STDIN) to the courier_warehouse connection's PostgreSQL."""
    import psycopg
    from airflow.sdk import Connection

    c = Connection.get(WAREHOUSE_CONN_ID)
    params = {"host": c.host, "port": c.port, "dbname": c.schema, "user": c.login, "password": c.password}
    return psycopg.connect(**{k: v for k, v in params.items() if v not in (None, "")})


STAGING_CLEANUP = (
    "DELETE FROM courier_staging.positions_staging WHERE dag_run_id = %s"
    " OR staged_at < (now() AT TIME ZONE 'UTC') - INTERVAL '2 days'"
)


def stage_local(table_uri: str, files: list[dict], run_id: str, version: int) -> int:
    """Local mode: the files' rows into positions_staging, stamped with the DAG run and the
    version (an earlier try's rows deleted first); one transaction. Returns rows staged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ", ".join((*PARQUET_COLUMNS, "dag_run_id", "table_version"))
    staged = 0
    conn = _local_warehouse_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(STAGING_CLEANUP, (run_id,))
            for f in files:
                path = Path(table_uri.removeprefix("file://")) / unquote(f["path"])
                table = pq.ParquetFile(path).read()
                if tuple(table.column_names) != PARQUET_COLUMNS:
                    raise ValueError(f"{path}: columns {table.column_names}, expected {list(PARQUET_COLUMNS)}")
                if f["rows"] is not None and table.num_rows != f["rows"]:
                    raise ValueError(f"{path}: {table.num_rows} rows, the Delta log says {f['rows']}")
                for i, field in enumerate(table.schema):
                    if pa.types.is_timestamp(field.type):  # UTC instants -> the warehouse's UTC wall time
                        table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp("us")))
                with cur.copy(f"COPY courier_staging.positions_staging ({columns}) FROM STDIN") as copy:
                    for batch in table.to_batches(max_chunksize=65536):
                        for row in zip(*(col.to_pylist() for col in batch.columns)):
                            copy.write_row((*row, run_id, version))
                staged += table.num_rows
        conn.commit()
    finally:
        conn.close()
    return staged


def manifest_of(table_uri: str, files: list[dict]) -> dict:
    """A Redshift COPY manifest of the files (Parquet needs each file's content_length)."""
    return {"entries": [{"url": f"{table_uri}/{unquote(f['path'])}", "mandatory": True,
                         "meta": {"content_length": int(f["size"])}} for f in files]}  # fmt: skip


def stage_redshift(table_uri: str, files: list[dict], run_id: str, version: int) -> int:
    """AWS mode: write the files' COPY manifest (reload_manifest_uri, default
    <reports_uri>/reload-manifests) and COPY it into staging (sql/reload_copy_staging.sql)."""
    import re

    import jinja2
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from courier_common import AWS_CONN_ID

    manifest = None
    if files:
        base = setting("reload_manifest_uri", f"{reports_base()}/reload-manifests").rstrip("/")
        manifest = f"{base}/{re.sub(r'[^A-Za-z0-9._=-]', '_', run_id)}.json"
        bucket, _, key = manifest.removeprefix("s3://").partition("/")
        S3Hook(aws_conn_id=AWS_CONN_ID).load_string(json.dumps(manifest_of(table_uri, files)), key=key,
                                                    bucket_name=bucket, replace=True)  # fmt: skip
    sql = jinja2.Template((SQL_DIR / "reload_copy_staging.sql").read_text()).render(
        run_id=run_id, table_version=version, manifest=manifest, iam_role=setting("redshift_copy_role_arn"))
    warehouse_hook().run(sql, autocommit=True, split_statements=True)
    return sum(int(f["rows"] or 0) for f in files)


def render_reload_sql(run_id: str, dates: list[date], version: int, files_read: int) -> str:
    import jinja2

    return jinja2.Template((SQL_DIR / "reload_positions.sql").read_text()).render(
        run_id=run_id, start_date=dates[0].isoformat(), end_date=dates[-1].isoformat(),
        dates=[d.isoformat() for d in dates], table_version=version, files_read=files_read,
    )  # fmt: skip


def replace_dates(run_id: str, dates: list[date], version: int, files_read: int) -> dict:
    """The transaction: LOCK the ledger, check the version, replace the dates."""
    conn = warehouse_hook().get_conn()
    try:
        cur = conn.cursor()
        cur.execute("LOCK courier.load_ledger")
        now = loaded_version(cur)
        if now != version:
            raise RuntimeError(f"the warehouse loaded up to table version {now} while this reload staged version "
                               f"{version}: retrying reads that version's files")  # fmt: skip
        for statement in sql_statements(render_reload_sql(run_id, dates, version, files_read)):
            cur.execute(statement)
        cur.execute("SELECT table_version, files_read, rows_staged, rows_inserted, duplicates_skipped"
                    " FROM courier.reloads WHERE dag_run_id = %s", (run_id,))  # fmt: skip
        result = dict(zip(("table_version", "files_read", "rows_staged", "rows_inserted", "duplicates_skipped"),
                          map(int, cur.fetchone())))  # fmt: skip
        cur.close()
        conn.commit()
        return result
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()


RECONCILE_DATES = """
SELECT d.event_date, COALESCE(f.fact_rows, 0), COALESCE(d.rows_staged, 0), COALESCE(d.rows_inserted, 0),
       COALESCE(d.duplicates_skipped, 0)
FROM (SELECT event_date, SUM(rows_staged) AS rows_staged, SUM(rows_inserted) AS rows_inserted,
             SUM(duplicates_skipped) AS duplicates_skipped
      FROM courier.load_ledger_dates WHERE event_date BETWEEN %s AND %s GROUP BY event_date) AS d
FULL OUTER JOIN (SELECT event_date, COUNT(*) AS fact_rows FROM courier.positions
                 WHERE event_date BETWEEN %s AND %s GROUP BY event_date) AS f ON d.event_date = f.event_date
"""


def reconcile_dates(dates: list[date], table_uri: str) -> dict:
    """The daily check's comparison for `dates`: lake rows per date as of the loaded table
    version = rows in courier.positions + copies skipped; positions = ledger's inserted."""
    hook = warehouse_hook()
    (version,) = hook.get_first("SELECT COALESCE(MAX(table_version), 0) FROM courier.load_ledger")
    start, end = dates[0], dates[-1]
    rows = hook.get_records(RECONCILE_DATES, parameters=(start, end, start, end))
    warehouse = {str(d): {"fact_rows": int(f), "rows_staged": int(s), "rows_inserted": int(i),
                          "duplicates_skipped": int(k)} for d, f, s, i, k in rows if d is not None}  # fmt: skip
    lake = {d: n for d, n in lake_rows_by_date(table_uri, int(version)).items() if start.isoformat() <= d <= end.isoformat()}
    broken = lake_warehouse_mismatches(lake, warehouse, int(version))
    if broken:
        raise ValueError("the reloaded dates do not reconcile:\n  " + "\n  ".join(broken))
    return {"table_version": int(version), "lake": lake, "warehouse": warehouse}


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    on_failure_callback=CourierAlert("run failed"),
    tags=["courier", "warehouse", "reload"],
    doc_md=__doc__,
    template_searchpath=[str(SQL_DIR)],
    user_defined_macros={"courier_setting": setting, "courier_utcnow": lambda: datetime.now(timezone.utc)},
    params={
        "start_date": Param(None, type=["null", "string"], format="date", description="first event_date (YYYY-MM-DD)"),
        "end_date": Param(None, type=["null", "string"], format="date", description="last event_date, inclusive"),
    },
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(minutes=20),
        "on_failure_callback": CourierAlert("task failed"),
    },
)
def courier_reload():
    @task
    def migrate_warehouse() -> list:
        return migrate_warehouse_now()

    @task(execution_timeout=RELOAD_TIMEOUT, multiple_outputs=False)
    def reload_positions(params=None, dag_run=None) -> dict:
        dates = date_range(params)
        table_uri = lake_table_uri()
        hook = warehouse_hook()
        conn = hook.get_conn()
        try:
            cur = conn.cursor()
            version, pending = loaded_version(cur), pending_erasures(cur)
            cur.close()
        finally:
            conn.close()
        if pending:
            raise ValueError(f"erasure requests {pending} have erased the lake but not yet the warehouse: "
                             "let courier_erasure finish them, then reload")  # fmt: skip
        files = files_of_dates(table_uri, version, dates) if version > 0 else []
        log.info("reloading %s..%s from table version %d: %d files, %d rows", dates[0], dates[-1], version,
                 len(files), sum(f["rows"] or 0 for f in files))  # fmt: skip
        stage = stage_local if local_mode() else stage_redshift
        staged = stage(table_uri, files, dag_run.run_id, version)
        result = replace_dates(dag_run.run_id, dates, version, len(files))
        if result["rows_staged"] != staged:
            raise ValueError(f"staged {staged} rows but the reload read {result['rows_staged']} from staging")
        log.info("reloaded %s..%s: %s", dates[0], dates[-1], result)
        return {**result, "start_date": dates[0].isoformat(), "end_date": dates[-1].isoformat()}

    refresh_gold = SQLExecuteQueryOperator(
        task_id="refresh_gold", conn_id=WAREHOUSE_CONN_ID, sql="refresh_gold.sql", split_statements=True
    )

    @task(retries=0, multiple_outputs=False)
    def check_reloaded_dates(params=None) -> dict:
        result = reconcile_dates(date_range(params), lake_table_uri())
        log.info("the reloaded dates reconcile as of table version %d: %s", result["table_version"], result["lake"])
        return result

    chain(migrate_warehouse(), reload_positions(), refresh_gold, check_reloaded_dates())


courier_reload()
