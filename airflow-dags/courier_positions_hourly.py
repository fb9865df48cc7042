"""
### courier_positions_hourly

Every hour: compact the courier position stream into the Delta table, load
exactly the files of that compactor run into the warehouse, merge them into
the `positions` fact table, check them, and refresh the gold tables for the
dates the load touched. SQL lives in `sql/` (Redshift dialect; PostgreSQL
differences in `sql/postgres/`, see its README).

**Modes.** AWS (default): the compactor runs as an ECS task and the warehouse
is Redshift. Local (`COURIER_LOCAL_MODE=true` or the Airflow Variable
`courier_local_mode=true`): the compactor is a local process on the local
stream and table, the warehouse is PostgreSQL. Both use the connection
`courier_warehouse`. Settings: see `airflow-dags/README.md`.

**Tasks**

| task | what it does |
|---|---|
| `choose_compactor` | branches to the ECS or the local compactor by mode |
| `ecs_settings` | (AWS) reads the ECS settings from Variables at run time |
| `compact_ecs` | (AWS) `EcsRunTaskOperator`: one `compactor run`; its last log line (the JSON run report) goes to XCom |
| `compact_local` | (local) runs `compactor run` and pushes its JSON run report; exit 3 (another run committed first) fails the try, so it is retried |
| `run_report` | validates the report of whichever compactor ran and passes it on: the table version in it names the manifest of *this* run, so a retried load reads the same files |
| `create_tables` | `CREATE TABLE IF NOT EXISTS` for staging, fact, gold (idempotent) |
| `load_staging` | empties `positions_staging` and loads the run's manifest: Redshift `COPY ... FORMAT AS PARQUET MANIFEST`; local: the manifest's Parquet files via pyarrow and `COPY FROM STDIN`, in one transaction. A run that added no files loads nothing |
| `check_staging_row_count` | staging rows = `rows_written` of the report (`SQLValueCheckOperator`) |
| `check_staging_no_null_keys` | no empty `event_id`, `courier_id` or timestamps (`SQLCheckOperator`) |
| `check_staging_coordinates` | lat/lon and the optional measures in range (`SQLCheckOperator`) |
| `merge_positions` | `MERGE` staging into `positions` on `event_id`, deriving `event_date`; queues the touched dates in `gold_dirty_dates` (one transaction) |
| `check_fact_no_duplicates` | no `event_id` twice on the touched dates |
| `check_fact_freshness` | newest `received_at` within `freshness_hours` of the interval end |
| `refresh_gold` | delete-then-insert `courier_daily` and `positions_hourly` for the queued dates (one transaction) |
| `notify_failure` | runs only when a task failed: publishes to SNS (local: logs), then fails so the run is marked failed |

Idempotent per data interval: the compactor commits each stream range once,
the load empties staging first, the MERGE is keyed on `event_id`, the gold
refresh is delete-then-insert. `max_active_runs=1` because staging is shared.
Checks are not retried (data does not fix itself); the other tasks are.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.common.sql.operators.sql import (
    SQLCheckOperator,
    SQLExecuteQueryOperator,
    SQLValueCheckOperator,
)
from airflow.sdk import TriggerRule, chain, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

log = logging.getLogger(__name__)

DAG_DIR = Path(__file__).resolve().parent
SQL_DIR = DAG_DIR / "sql"
REPO_ROOT = DAG_DIR.parent
WAREHOUSE_CONN_ID = "courier_warehouse"
AWS_CONN_ID = "aws_default"

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


def setting(name: str, default: str | None = None) -> str | None:
    """Run-time setting: Airflow Variable `courier_<name>` (so also
    `AIRFLOW_VAR_COURIER_<NAME>`), else environment `COURIER_<NAME>`, else
    `default`. Only called inside tasks and templates, never at import."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(f"courier_{name}", default=None)
    except Exception:  # no metadata database / API reachable: fall back to env
        value = None
    if value is None or value == "":
        value = os.environ.get(f"COURIER_{name.upper()}")
    return default if value is None or value == "" else value


def local_mode() -> bool:
    return (setting("local_mode", "false") or "false").strip().lower() in ("1", "true", "yes", "on")


def _local_paths() -> dict[str, str]:
    return {
        "compactor_bin": setting("compactor_bin", str(REPO_ROOT / "target" / "debug" / "compactor")),
        "data_dir": setting("data_dir", str(REPO_ROOT / "data")),
        "stream_name": setting("stream_name", "courier-positions"),
        "table_uri": setting("table_uri", str(REPO_ROOT / "lake" / "positions")),
    }


def manifest_uri(table_uri: str, table_version: int) -> str:
    """`<table>/_manifests/v<table version, 20 digits>.json` (compactor contract)."""
    return f"{table_uri.rstrip('/')}/_manifests/v{int(table_version):020d}.json"


def parse_report(raw) -> dict:
    """The compactor's JSON run report, validated."""
    report = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"compactor run report lacks {missing}: {report}")
    if int(report["rows_written"]) > 0 and not report["manifest"]:
        raise ValueError(f"run {report['run']} wrote rows but names no manifest: {report}")
    return report


def _load_local(report: dict, table_uri: str) -> int:
    """Local substitute for Redshift COPY: read exactly the Parquet files listed
    in the run's manifest and stream them into positions_staging (emptied
    first) in one transaction. Returns the rows loaded."""
    from urllib.parse import unquote, urlparse

    import pyarrow as pa
    import pyarrow.parquet as pq
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    files: list[Path] = []
    if int(report["files_added"]) > 0:
        path = manifest_uri(table_uri, report["table_version"])
        if report.get("manifest") and Path(report["manifest"]).resolve() != Path(path).resolve():
            raise ValueError(f"report names manifest {report['manifest']}, expected {path}")
        manifest = json.loads(Path(path).read_text())
        for entry in manifest["entries"]:
            url = urlparse(entry["url"])
            if url.scheme not in ("", "file"):
                raise ValueError(f"local mode reads local files only, not {entry['url']}")
            file = Path(unquote(url.path))
            size = file.stat().st_size
            if size != entry["meta"]["content_length"]:
                raise ValueError(f"{file}: {size} bytes, manifest says {entry['meta']['content_length']}")
            files.append(file)
        log.info("manifest %s: %d files", path, len(files))

    columns = ", ".join(PARQUET_COLUMNS)
    loaded = 0
    conn = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID).get_conn()
    try:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE positions_staging")
            for file in files:
                table = pq.read_table(file)
                if tuple(table.column_names) != PARQUET_COLUMNS:
                    raise ValueError(f"{file}: columns {table.column_names}, expected {list(PARQUET_COLUMNS)}")
                # Timestamps are UTC instants; the warehouse stores UTC wall time.
                for i, field in enumerate(table.schema):
                    if pa.types.is_timestamp(field.type):
                        table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp("us")))
                with cur.copy(f"COPY positions_staging ({columns}) FROM STDIN") as copy:
                    for batch in table.to_batches(max_chunksize=65536):
                        for row in zip(*(col.to_pylist() for col in batch.columns)):
                            copy.write_row(row)
                loaded += table.num_rows
        conn.commit()
    finally:
        conn.close()
    return loaded


def _load_redshift(report: dict, table_uri: str, iam_role: str) -> None:
    import jinja2
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(WAREHOUSE_CONN_ID).get_hook()
    if int(report["files_added"]) == 0:
        hook.run("TRUNCATE positions_staging", autocommit=True)
        return
    sql = jinja2.Template((SQL_DIR / "copy_staging.sql").read_text()).render(
        manifest_uri=manifest_uri(table_uri, report["table_version"]), iam_role=iam_role
    )
    hook.run(sql, autocommit=True, split_statements=True)


def _notify(context) -> str:
    dag_run = context["dag_run"]
    message = (
        f"courier_positions_hourly failed: run {dag_run.run_id}, data interval "
        f"{context['data_interval_start']} - {context['data_interval_end']}. See the task logs."
    )
    if local_mode():
        log.error("FAILURE NOTIFICATION (local mode, not sent to SNS): %s", message)
    else:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        SnsHook(aws_conn_id=AWS_CONN_ID).publish_to_target(
            target_arn=setting("alerts_topic_arn"), message=message, subject="courier_positions_hourly failed"
        )
        log.error("published failure to SNS: %s", message)
    return message


@dag(
    dag_id="courier_positions_hourly",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["courier", "warehouse", "hourly"],
    doc_md=__doc__,
    template_searchpath=[str(SQL_DIR)],
    user_defined_macros={"courier_local_mode": local_mode},
    params={"freshness_hours": 3},
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
    },
)
def courier_positions_hourly():
    @task.branch
    def choose_compactor() -> str:
        return "compact_local" if local_mode() else "ecs_settings"

    @task
    def ecs_settings() -> dict:
        """ECS settings from Variables, read at run time (not at import)."""
        container = setting("ecs_container_name", "compactor")
        return {
            "cluster": setting("ecs_cluster"),
            "task_definition": setting("ecs_task_definition"),
            "network_configuration": json.loads(setting("ecs_network_configuration", "{}")),
            "awslogs_group": setting("ecs_log_group"),
            "awslogs_stream_prefix": f"{setting('ecs_log_stream_prefix', 'compactor')}/{container}",
            "overrides": {"containerOverrides": [{"name": container, "command": ["run"]}]},
        }

    ecs = ecs_settings()
    compact_ecs = EcsRunTaskOperator(
        task_id="compact_ecs",
        aws_conn_id=AWS_CONN_ID,
        cluster=ecs["cluster"],
        task_definition=ecs["task_definition"],
        launch_type="FARGATE",
        network_configuration=ecs["network_configuration"],
        overrides=ecs["overrides"],
        awslogs_group=ecs["awslogs_group"],
        awslogs_stream_prefix=ecs["awslogs_stream_prefix"],
        do_xcom_push=True,  # the last log line: the run report
    )

    @task
    def compact_local() -> dict:
        paths = _local_paths()
        cmd = [
            paths["compactor_bin"], "run",
            "--data-dir", paths["data_dir"],
            "--stream-name", paths["stream_name"],
            "--table-uri", paths["table_uri"],
        ]  # fmt: skip
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.stderr:
            log.info("compactor stderr:\n%s", proc.stderr)
        if proc.returncode == 3:
            raise RuntimeError("another compactor run committed this run number first; retrying")
        if proc.returncode != 0:
            raise RuntimeError(f"compactor exited {proc.returncode}: {proc.stderr[-2000:]}")
        report = parse_report(proc.stdout)
        log.info("compactor run report: %s", json.dumps(report))
        return report

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def run_report(ti=None) -> dict:
        raw = ti.xcom_pull(task_ids="compact_local") if local_mode() else ti.xcom_pull(task_ids="compact_ecs")
        if raw is None:
            raise ValueError("no compactor run report in XCom")
        report = parse_report(raw)
        log.info(
            "run %s: %s rows in %s files, table version %s",
            report["run"], report["rows_written"], report["files_added"], report["table_version"],
        )  # fmt: skip
        return report

    create_tables = SQLExecuteQueryOperator(
        task_id="create_tables",
        conn_id=WAREHOUSE_CONN_ID,
        sql="{% include ('postgres/' if courier_local_mode() else '') ~ 'create_tables.sql' %}",
        split_statements=True,
        autocommit=True,
    )

    @task
    def load_staging(report: dict) -> int:
        if local_mode():
            rows = _load_local(report, _local_paths()["table_uri"])
        else:
            _load_redshift(report, setting("table_uri"), setting("redshift_iam_role"))
            rows = int(report["rows_written"])
        log.info("staged run %s (table version %s)", report["run"], report["table_version"])
        return rows

    check_kwargs = {"conn_id": WAREHOUSE_CONN_ID, "retries": 0}
    check_row_count = SQLValueCheckOperator(
        task_id="check_staging_row_count",
        sql="checks/staging_row_count.sql",
        pass_value="{{ ti.xcom_pull(task_ids='run_report')['rows_written'] }}",
        **check_kwargs,
    )
    check_null_keys = SQLCheckOperator(
        task_id="check_staging_no_null_keys", sql="checks/staging_no_null_keys.sql", **check_kwargs
    )
    check_coordinates = SQLCheckOperator(
        task_id="check_staging_coordinates", sql="checks/staging_coordinates_in_range.sql", **check_kwargs
    )
    merge_positions = SQLExecuteQueryOperator(
        task_id="merge_positions", conn_id=WAREHOUSE_CONN_ID, sql="merge_positions.sql", split_statements=True
    )
    check_duplicates = SQLCheckOperator(
        task_id="check_fact_no_duplicates", sql="checks/fact_no_duplicate_event_ids.sql", **check_kwargs
    )
    check_freshness = SQLCheckOperator(
        task_id="check_fact_freshness", sql="checks/fact_freshness.sql", **check_kwargs
    )
    refresh_gold = SQLExecuteQueryOperator(
        task_id="refresh_gold", conn_id=WAREHOUSE_CONN_ID, sql="refresh_gold.sql", split_statements=True
    )

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def notify_failure(**context) -> None:
        message = _notify(context)
        # Fail on purpose: as the only leaf, a successful notify would mark
        # the run successful.
        raise RuntimeError(message)

    branch = choose_compactor()
    local = compact_local()
    report = run_report()
    loaded = load_staging(report)
    notify = notify_failure()

    chain(branch, [ecs, local])
    chain(ecs, compact_ecs)
    chain([compact_ecs, local], report)
    chain([report, create_tables], loaded)
    chain(
        loaded,
        [check_row_count, check_null_keys, check_coordinates],
        merge_positions,
    )
    chain(merge_positions, [check_duplicates, check_freshness], refresh_gold)
    # Every task but the branch (whose skips would skip the notifier) feeds it.
    chain(
        [ecs, compact_ecs, local, report, create_tables, loaded, check_row_count, check_null_keys,
         check_coordinates, merge_positions, check_duplicates, check_freshness, refresh_gold],
        notify,
    )  # fmt: skip


courier_positions_hourly()
