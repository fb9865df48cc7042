"""
### courier_positions_maintenance

Daily upkeep of the courier position data: the Delta table (compactor
`optimize`, then `vacuum`) and the warehouse (`VACUUM`/`ANALYZE`).

**Modes** as in `courier_positions_hourly`: AWS (default) runs the compactor
subcommands as ECS tasks (the compactor task definition with a container
command override); local mode (`COURIER_LOCAL_MODE=true`) runs the local
compactor binary on the local table. Settings (Variable, env, `[courier]`
config, default): see `airflow-dags/README.md`.

| task | what it does |
|---|---|
| `choose_compactor` | branches to the ECS or the local compactor by mode |
| `ecs_settings` | (AWS) reads the ECS settings at run time |
| `optimize_ecs` / `optimize_local` | `compactor optimize --target-file-mib <optimize_target_file_mib, 128> --min-files <optimize_min_files, 2>`: rewrites the small files of each date partition into files of about the target size, in one commit that changes no data; its JSON report is written to `--output-uri` (S3 or the local reports directory) and read from there |
| `vacuum_ecs` / `vacuum_local` | `compactor vacuum --retention-hours <vacuum_retention_hours, 168>` (after optimize): deletes the files no table version within the retention references (those optimize replaced, once old enough) and never-committed files of crashed runs, and the event id files (`_dedup/`) the dedup window no longer needs; its JSON report (the deleted files) likewise |
| `reconcile_lake_and_warehouse` | the daily check that the lake and the warehouse hold the same rows per `event_date`: the lake's rows per date as of the table version the warehouse has loaded (`MAX(table_version)` of `courier.load_ledger`), counted from the Delta log (the `numRecords` statistics of the files active at that version, by their `event_date` partition; the newest checkpoint at or before it, then the JSON commits; S3 in AWS mode, the local table in local mode), must equal the rows in `courier.positions` plus the duplicates the loads skipped on that date (`courier.load_ledger_dates`), and `courier.positions` must hold what the ledger inserted; fails with every broken date and its numbers (`sql/checks/lake_warehouse_counts.sql` reads the warehouse side in one statement) |
| `vacuum_analyze` | `VACUUM` and `ANALYZE` of `positions`, `courier_daily`, `positions_hourly` (`sql/maintenance.sql`, valid in Redshift and PostgreSQL; autocommit, since `VACUUM` cannot run in a transaction) on the `courier_warehouse` connection; independent of the lake tasks |

Safe with the hourly DAG: optimize is a Delta commit of its own (not a
compactor *run*, so `compactor runs` never lists it and the warehouse never
loads rewritten files twice); vacuum keeps every file younger than the
retention, which must stay longer than a compactor run and the hourly DAG's
catch-up window.

Every task has an `execution_timeout` (lake tasks 1 h, the rest 20 min), the DAG a
`dagrun_timeout` of 3 h; failures alert through `CourierAlert` (SNS in AWS mode, the
log in local mode), as in the hourly DAG.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task

from courier_common import (
    DAG_DIR,
    WAREHOUSE_CONN_ID,
    CourierAlert,
    ecs_compactor_task,
    lake_rows_by_date,
    lake_warehouse_mismatches,
    local_mode,
    local_paths,
    report_uri,
    run_compactor,
    setting,
    warehouse_hook,
)
from courier_common import ecs_settings as _ecs_settings

log = logging.getLogger(__name__)

DAG_ID = "courier_positions_maintenance"
LAKE_TIMEOUT = timedelta(hours=1)
DEFAULT_TIMEOUT = timedelta(minutes=20)
DAGRUN_TIMEOUT = timedelta(hours=3)
SQL_DIR = DAG_DIR / "sql"
CHECK_TIMEOUT = timedelta(minutes=20)


def lake_table_uri() -> str:
    """The Delta table: the local one in local mode, else the `table_uri` setting."""
    uri = local_paths()["table_uri"] if local_mode() else setting("table_uri")
    if not uri:
        raise ValueError("no table_uri setting: cannot count the lake")
    return uri


def compare_lake_and_warehouse(rows, table_uri: str) -> dict:
    """`rows`: the result of sql/checks/lake_warehouse_counts.sql. Raises with every
    broken date and its numbers; returns the counts compared."""
    version = int(rows[0][0]) if rows else 0
    warehouse = {
        str(date): {"fact_rows": int(fact), "rows_staged": int(staged), "rows_inserted": int(inserted),
                    "duplicates_skipped": int(skipped)}
        for _, date, fact, staged, inserted, skipped in rows if date is not None
    }  # fmt: skip
    lake = lake_rows_by_date(table_uri, version)
    broken = lake_warehouse_mismatches(lake, warehouse, version)
    for date in sorted(set(lake) | set(warehouse)):
        w = warehouse.get(date, {})
        log.info("event_date %s: lake %d, warehouse %d + %d duplicates skipped (ledger: staged %d, inserted %d)",
                 date, lake.get(date, 0), w.get("fact_rows", 0), w.get("duplicates_skipped", 0),
                 w.get("rows_staged", 0), w.get("rows_inserted", 0))  # fmt: skip
    if broken:
        for line in broken:  # one log line each, with its numbers (the error below repeats them)
            log.error("lake != warehouse: %s", line)
        raise ValueError(f"the lake and the warehouse do not hold the same rows per event_date (lake {table_uri} "
                         f"as of table version {version}):\n  " + "\n  ".join(broken))  # fmt: skip
    log.info("lake and warehouse agree on %d dates as of table version %d", len(set(lake) | set(warehouse)), version)
    return {"table_version": version, "lake": lake, "warehouse": warehouse}

OPTIMIZE_ARGS = [
    "optimize",
    "--target-file-mib", "{{ courier_setting('optimize_target_file_mib') }}",
    "--min-files", "{{ courier_setting('optimize_min_files') }}",
]  # fmt: skip
VACUUM_ARGS = ["vacuum", "--retention-hours", "{{ courier_setting('vacuum_retention_hours') }}"]


def _local_args(args: list[str]) -> list[str]:
    """The same arguments with the settings filled in, plus the local table."""
    import jinja2

    env = jinja2.Environment()
    rendered = [env.from_string(a).render(courier_setting=setting) for a in args]
    return [*rendered, "--table-uri", local_paths()["table_uri"]]


@dag(
    dag_id=DAG_ID,
    schedule="30 3 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAGRUN_TIMEOUT,
    on_failure_callback=CourierAlert("run failed"),
    tags=["courier", "warehouse", "maintenance"],
    doc_md=__doc__,
    template_searchpath=[str(SQL_DIR)],
    user_defined_macros={"courier_setting": setting, "courier_report_uri": report_uri},
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": DEFAULT_TIMEOUT,
        "on_failure_callback": CourierAlert("task failed"),
    },
)
def courier_positions_maintenance():
    @task.branch
    def choose_compactor() -> str:
        return "optimize_local" if local_mode() else "ecs_settings"

    @task
    def ecs_settings() -> dict:
        return _ecs_settings()

    # multiple_outputs=False: a `-> dict` task pushes one XCom per key by default, and Airflow
    # 3.0.6 refuses a None one (optimize with nothing to do reports "table_version": null).
    @task(execution_timeout=LAKE_TIMEOUT, multiple_outputs=False)
    def optimize_local(dag_run=None, ti=None) -> dict:
        uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number)
        report = run_compactor(*_local_args(OPTIMIZE_ARGS), output_uri=uri)
        log.info("optimize: %s", report)
        return report

    @task(execution_timeout=LAKE_TIMEOUT, multiple_outputs=False)
    def vacuum_local(dag_run=None, ti=None) -> dict:
        uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number)
        report = run_compactor(*_local_args(VACUUM_ARGS), output_uri=uri)
        log.info("vacuum deleted %d files", len(report.get("files_deleted", [])))
        return report

    ecs = ecs_settings()
    optimize_ecs = ecs_compactor_task("optimize_ecs", ecs, OPTIMIZE_ARGS, execution_timeout=LAKE_TIMEOUT)
    vacuum_ecs = ecs_compactor_task("vacuum_ecs", ecs, VACUUM_ARGS, execution_timeout=LAKE_TIMEOUT)
    branch = choose_compactor()
    local_optimize = optimize_local()
    branch >> [ecs, local_optimize]
    ecs >> optimize_ecs >> vacuum_ecs
    local_optimize >> vacuum_local()

    @task(retries=0, execution_timeout=CHECK_TIMEOUT, multiple_outputs=False)
    def reconcile_lake_and_warehouse() -> dict:
        """Daily: the lake's rows per event_date (Delta log, as of the loaded table version)
        = the warehouse's rows + the duplicates the loads skipped."""
        rows = warehouse_hook().get_records(Path(SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text())
        return compare_lake_and_warehouse(rows, lake_table_uri())

    reconcile_lake_and_warehouse()

    SQLExecuteQueryOperator(
        task_id="vacuum_analyze",
        conn_id=WAREHOUSE_CONN_ID,
        sql="maintenance.sql",
        split_statements=True,
        autocommit=True,
    )


courier_positions_maintenance()
