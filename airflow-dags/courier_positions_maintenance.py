"""
### courier_positions_maintenance

Daily upkeep of the courier position data: the retention policy (expired
lake partitions, dead letters in local mode, warehouse raw positions and gold
rows), the Delta table (compactor `optimize`, then `vacuum`) and the warehouse
(`VACUUM`/`ANALYZE`).

**Modes** as in `courier_positions_hourly`: AWS (default) runs the compactor
subcommands as ECS tasks (the compactor task definition with a container
command override); local mode (`COURIER_LOCAL_MODE=true`) runs the local
compactor binary on the local table. Settings (Variable, env, `[courier]`
config, default): see `airflow-dags/README.md`.

| task | what it does |
|---|---|
| `retention_policy` | the retention policy of this run: per tier (lake, dead letters, warehouse raw, gold) its days (settings `<tier>_retention_days`: Terraform's `courier.<tier>_retention_days` in AWS mode, where none has a default; local mode: 30, 14, 30, 90) and its cutoff, today - days (UTC, today being the run's logical date): rows and partitions whose `event_date` is before the cutoff are expired |
| `choose_compactor` | branches to the ECS or the local compactor by mode |
| `ecs_settings` | (AWS) reads the ECS settings at run time |
| `retention_ecs` / `retention_local` | `compactor retention --keep-days <lake_retention_days> --now <the run's time>`: removes the `event_date` partitions before the lake cutoff in one Delta commit of remove actions (nothing expired: no commit), reports them (`cutoff_date`, `partitions_removed`, `files_removed`, `rows_removed`) in its JSON report, which `retention_local` checks against the run's policy; the files go with `vacuum` once older than its retention. Local mode also passes `--dead-letter-uri <the local dead letters> --dead-letter-keep-days <dead_letter_retention_days>`; in AWS mode the lake bucket's lifecycle rule expires dead letters |
| `optimize_ecs` / `optimize_local` | `compactor optimize --target-file-mib <optimize_target_file_mib, 128> --min-files <optimize_min_files, 2>`: rewrites the small files of each date partition into files of about the target size, in one commit that changes no data; its JSON report is written to `--output-uri` (S3 or the local reports directory) and read from there |
| `vacuum_ecs` / `vacuum_local` | `compactor vacuum --retention-hours <vacuum_retention_hours, 168>` (after optimize): deletes the files no table version within the retention references (those optimize replaced, once old enough) and never-committed files of crashed runs, and the event id files (`_dedup/`) the dedup window no longer needs; its JSON report (the deleted files) likewise |
| `retention_warehouse` | deletes the `courier.positions` rows before the raw cutoff and the `courier_gold.courier_daily` / `courier_gold.positions_hourly` rows before the gold cutoff, in one transaction (`sql/retention_warehouse.sql`, Redshift and PostgreSQL), and returns the rows deleted per table; the load ledgers are kept (counts only; the high-water mark) |
| `reconcile_lake_and_warehouse` | the daily check that the lake and the warehouse hold the same rows per `event_date` inside both retention windows (from the later of the lake and raw cutoffs on: older dates are expired on one side or both and are not compared): the lake's rows per date as of the table version the warehouse has loaded (`MAX(table_version)` of `courier.load_ledger`), counted from the Delta log (the `numRecords` statistics of the files active at that version, by their `event_date` partition; the newest checkpoint at or before it, then the JSON commits; S3 in AWS mode, the local table in local mode), must equal the rows in `courier.positions` plus the duplicates the loads skipped on that date (`courier.load_ledger_dates`), and `courier.positions` must hold what the ledger inserted; fails with every broken date and its numbers (`sql/checks/lake_warehouse_counts.sql` reads the warehouse side in one statement) |
| `vacuum_analyze` | `VACUUM` and `ANALYZE` of `positions`, `courier_daily`, `positions_hourly` (`sql/maintenance.sql`, valid in Redshift and PostgreSQL; autocommit, since `VACUUM` cannot run in a transaction) on the `courier_warehouse` connection, after `retention_warehouse` (whatever its outcome: the space its deletes free is reclaimed); independent of the lake tasks |

Safe with the hourly DAG: retention and optimize are Delta commits of their own (not a
compactor *run*, so `compactor runs` never lists it and the warehouse never
loads rewritten files twice); vacuum keeps every file younger than the
retention, which must stay longer than a compactor run and the hourly DAG's
catch-up window.

Every task has an `execution_timeout` (lake tasks and `retention_warehouse` 1 h, the rest 20 min), the DAG a
`dagrun_timeout` of 3 h; failures alert through `CourierAlert` (SNS in AWS mode, the
log in local mode), as in the hourly DAG.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag, task

from courier_common import (
    DAG_DIR,
    WAREHOUSE_CONN_ID,
    CourierAlert,
    check_retention_report,
    ecs_compactor_task,
    lake_rows_by_date,
    lake_warehouse_mismatches,
    local_mode,
    local_paths,
    report_uri,
    retention_dead_letter_uri,
    run_compactor,
    setting,
    sql_statements,
    warehouse_hook,
)
from courier_common import ecs_settings as _ecs_settings
from courier_common import retention_policy as _retention_policy

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


def within_retention(lake: dict, warehouse: dict, compare_from: str | None) -> tuple[dict, dict]:
    """The lake's and the warehouse's counts per date (ISO date keys) from `compare_from` on:
    the dates inside both retention windows. Before it retention has removed the date from
    the lake, the warehouse or both (each on its own schedule), so a difference there is no
    loss. None: every date."""
    if not compare_from:
        return lake, warehouse
    expired = sorted(d for d in set(lake) | set(warehouse) if d < compare_from)
    if expired:
        log.info("not compared: %d dates before %s, outside the retention windows (%s .. %s)",
                 len(expired), compare_from, expired[0], expired[-1])  # fmt: skip
    return ({d: n for d, n in lake.items() if d >= compare_from},
            {d: w for d, w in warehouse.items() if d >= compare_from})  # fmt: skip


def compare_lake_and_warehouse(rows, table_uri: str, compare_from: str | None = None) -> dict:
    """`rows`: the result of sql/checks/lake_warehouse_counts.sql. Raises with every
    broken date and its numbers; returns the counts compared. `compare_from` (ISO date):
    only dates from it on are compared (the dates inside both retention windows; before
    it, retention has removed the date from the lake, the warehouse or both)."""
    version = int(rows[0][0]) if rows else 0
    warehouse = {
        str(date): {"fact_rows": int(fact), "rows_staged": int(staged), "rows_inserted": int(inserted),
                    "duplicates_skipped": int(skipped)}
        for _, date, fact, staged, inserted, skipped in rows if date is not None
    }  # fmt: skip
    lake, warehouse = within_retention(lake_rows_by_date(table_uri, version), warehouse, compare_from)
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
# The lake tier of the retention policy, with the run's policy (retention_policy's XCom): the
# same cutoff as the warehouse and the daily check. AWS mode: the table from the task
# definition (COMPACTOR_TABLE_URI); dead letters expire by the lake bucket's lifecycle rule.
RETENTION_ARGS = [
    "retention",
    "--keep-days", "{{ ti.xcom_pull(task_ids='retention_policy')['lake_retention_days'] }}",
    "--now", "{{ ti.xcom_pull(task_ids='retention_policy')['now'] }}",
]  # fmt: skip
RETENTION_SQL = SQL_DIR / "retention_warehouse.sql"


def warehouse_retention_statements(policy: dict) -> list[tuple[str, str]]:
    """(table, statement) of sql/retention_warehouse.sql rendered with the run's cutoffs."""
    import jinja2

    text = jinja2.Template(RETENTION_SQL.read_text()).render(
        raw_cutoff=policy["warehouse_raw_cutoff"], gold_cutoff=policy["gold_cutoff"])
    out = []
    for statement in sql_statements(text):
        m = re.search(r"DELETE\s+FROM\s+([A-Za-z0-9_.]+)", statement, re.IGNORECASE)
        if not m:
            raise ValueError(f"{RETENTION_SQL.name}: not a DELETE statement: {statement[:200]}")
        out.append((m.group(1), statement))
    return out


def delete_expired_warehouse_rows(conn, policy: dict) -> dict[str, int]:
    """Run the warehouse retention in one transaction on a DB-API connection; the rows
    deleted per table."""
    deleted: dict[str, int] = {}
    cur = conn.cursor()
    try:
        for table, statement in warehouse_retention_statements(policy):
            cur.execute(statement)
            deleted[table] = deleted.get(table, 0) + max(int(cur.rowcount or 0), 0)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        cur.close()
    return deleted


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
    @task(multiple_outputs=False)
    def retention_policy(dag_run=None) -> dict:
        """Days and cutoff per tier, computed once for the run: every tier and the daily
        check cut at the same dates. `now` is the run's logical date (a cleared run cuts
        where it did), else when it was due, else now."""
        now = (getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
               or datetime.now(timezone.utc))  # fmt: skip
        policy = _retention_policy(now)
        log.info("retention policy as of %s: lake %d days (partitions before %s), dead letters %d days, "
                 "warehouse raw %d days (before %s), gold %d days (before %s)", policy["now"],
                 policy["lake_retention_days"], policy["lake_cutoff"], policy["dead_letter_retention_days"],
                 policy["warehouse_raw_retention_days"], policy["warehouse_raw_cutoff"],
                 policy["gold_retention_days"], policy["gold_cutoff"])  # fmt: skip
        return policy

    @task.branch
    def choose_compactor() -> str:
        return "retention_local" if local_mode() else "ecs_settings"

    @task
    def ecs_settings() -> dict:
        return _ecs_settings()

    @task(execution_timeout=LAKE_TIMEOUT, multiple_outputs=False)
    def retention_local(policy: dict, dag_run=None, ti=None) -> dict:
        """The lake's expired partitions (and the local dead letters) by `compactor retention`."""
        uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number)
        report = run_compactor(
            "retention", "--table-uri", local_paths()["table_uri"],
            "--keep-days", str(policy["lake_retention_days"]), "--now", policy["now"],
            "--dead-letter-uri", retention_dead_letter_uri(),
            "--dead-letter-keep-days", str(policy["dead_letter_retention_days"]),
            output_uri=uri,
        )  # fmt: skip
        check_retention_report(report, policy)
        log.info("lake retention: %d partitions before %s removed (%s files, %s rows), table version %s; %s",
                 len(report["partitions_removed"]), report["cutoff_date"], report["files_removed"],
                 report["rows_removed"], report.get("table_version"),
                 {k: v for k, v in report.items() if k.startswith("dead_letter")})  # fmt: skip
        return report

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

    policy = retention_policy()
    ecs = ecs_settings()
    retention_ecs = ecs_compactor_task("retention_ecs", ecs, RETENTION_ARGS, execution_timeout=LAKE_TIMEOUT)
    optimize_ecs = ecs_compactor_task("optimize_ecs", ecs, OPTIMIZE_ARGS, execution_timeout=LAKE_TIMEOUT)
    vacuum_ecs = ecs_compactor_task("vacuum_ecs", ecs, VACUUM_ARGS, execution_timeout=LAKE_TIMEOUT)
    branch = choose_compactor()
    local_retention = retention_local(policy)
    branch >> [ecs, local_retention]
    policy >> retention_ecs
    ecs >> retention_ecs >> optimize_ecs >> vacuum_ecs
    local_retention >> optimize_local() >> vacuum_local()

    @task(execution_timeout=LAKE_TIMEOUT, multiple_outputs=False)
    def retention_warehouse(policy: dict) -> dict:
        """The warehouse's expired raw positions and gold rows (sql/retention_warehouse.sql)."""
        conn = warehouse_hook().get_conn()
        try:
            deleted = delete_expired_warehouse_rows(conn, policy)
        finally:
            conn.close()
        log.info("warehouse retention: deleted %s (raw positions before %s, gold rows before %s)",
                 deleted, policy["warehouse_raw_cutoff"], policy["gold_cutoff"])  # fmt: skip
        return {"warehouse_raw_cutoff": policy["warehouse_raw_cutoff"], "gold_cutoff": policy["gold_cutoff"],
                "rows_deleted": deleted}  # fmt: skip

    @task(retries=0, execution_timeout=CHECK_TIMEOUT, multiple_outputs=False)
    def reconcile_lake_and_warehouse(policy: dict) -> dict:
        """Daily: the lake's rows per event_date (Delta log, as of the loaded table version)
        = the warehouse's rows + the duplicates the loads skipped, on the dates inside both
        retention windows."""
        rows = warehouse_hook().get_records(Path(SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text())
        return {**compare_lake_and_warehouse(rows, lake_table_uri(), policy["compare_from"]),
                "compare_from": policy["compare_from"]}  # fmt: skip

    reconcile_lake_and_warehouse(policy)

    retention_warehouse(policy) >> SQLExecuteQueryOperator(
        task_id="vacuum_analyze",
        conn_id=WAREHOUSE_CONN_ID,
        sql="maintenance.sql",
        split_statements=True,
        autocommit=True,
        trigger_rule="all_done",
    )


courier_positions_maintenance()
