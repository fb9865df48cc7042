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

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task

from courier_common import (
    DAG_DIR,
    WAREHOUSE_CONN_ID,
    CourierAlert,
    ecs_compactor_task,
    local_mode,
    local_paths,
    report_uri,
    run_compactor,
    setting,
)
from courier_common import ecs_settings as _ecs_settings

log = logging.getLogger(__name__)

DAG_ID = "courier_positions_maintenance"
LAKE_TIMEOUT = timedelta(hours=1)
DEFAULT_TIMEOUT = timedelta(minutes=20)
DAGRUN_TIMEOUT = timedelta(hours=3)
SQL_DIR = DAG_DIR / "sql"

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

    @task(execution_timeout=LAKE_TIMEOUT)
    def optimize_local(dag_run=None, ti=None) -> dict:
        uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number)
        report = run_compactor(*_local_args(OPTIMIZE_ARGS), output_uri=uri)
        log.info("optimize: %s", report)
        return report

    @task(execution_timeout=LAKE_TIMEOUT)
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

    SQLExecuteQueryOperator(
        task_id="vacuum_analyze",
        conn_id=WAREHOUSE_CONN_ID,
        sql="maintenance.sql",
        split_statements=True,
        autocommit=True,
    )


courier_positions_maintenance()
