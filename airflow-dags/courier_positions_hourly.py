"""
### courier_positions_hourly

Every hour: compact the courier position stream into the Delta table, load
every compactor run the warehouse has not loaded yet (normally just this
hour's), merge them into the `positions` fact table, check them, and refresh
the gold tables for the dates the load touched. SQL lives in `sql/` (Redshift
dialect; PostgreSQL differences in `sql/postgres/`, see its README).

**Modes.** AWS (default): the compactor runs as an ECS task and the warehouse
is Redshift. Local (`COURIER_LOCAL_MODE=true` or the Airflow Variable
`courier_local_mode=true`): the compactor is a local process on the local
stream and table, the warehouse is PostgreSQL. Both use the connection
`courier_warehouse`. Settings (Variable, env, `[courier]` config, default):
see `airflow-dags/README.md`.

**Which runs are loaded: the high-water mark lives in the warehouse.** The
table `compactor_loads` holds one row per compactor run merged into
`positions` (table version, run, rows, files, manifest, loaded_at); the
`MERGE` inserts those rows *in its own transaction*, so "merged" and
"recorded as loaded" cannot disagree. Each DAG run asks the compactor for
`runs --after-version <MAX(table_version) in compactor_loads>` and loads all of
them, oldest first. A run whose report was lost (the compact task died after
the commit, or an earlier DAG run failed after compacting) is therefore loaded
by the next DAG run, exactly once; a retried or re-run DAG run finds nothing
new and changes nothing.

**Tasks**

| task | what it does |
|---|---|
| `create_tables` | `CREATE TABLE IF NOT EXISTS` for staging, fact, gold, `compactor_loads` (idempotent) |
| `loaded_version` | the high-water mark: `MAX(table_version)` of `compactor_loads` (0 when empty: version 0 is the table's creation, never a run) |
| `choose_compactor` | branches to the ECS or the local compactor by mode |
| `ecs_settings` | (AWS) reads the ECS settings at run time |
| `compact_ecs` | (AWS) `EcsRunTaskOperator`: `compactor run`; its last log line (the one-line JSON run report) goes to XCom |
| `runs_ecs` | (AWS) `EcsRunTaskOperator`: `compactor runs --after-version <loaded_version>`; its last log line (the JSON list) goes to XCom |
| `compact_local` | (local) `compactor run`; exit 3 (another run committed first) or 4 (interrupted, nothing committed) fails the try, so it is retried |
| `runs_local` | (local) `compactor runs --after-version <loaded_version>` |
| `runs_to_load` | validates the list (all after the mark, ordered, a manifest for every run with files, this hour's committed run among them) and passes on the runs and the sum of their `rows_written` |
| `load_staging` | empties `positions_staging` and `compactor_runs_staging`, loads the manifest of every run in table-version order (Redshift `COPY ... FORMAT AS PARQUET MANIFEST`; local: the manifests' Parquet files via pyarrow and `COPY FROM STDIN`, one transaction) and records the runs in `compactor_runs_staging` |
| `check_staging_row_count` | staging rows = the sum of `rows_written` of the runs loaded (`SQLValueCheckOperator`) |
| `check_staging_no_null_keys` | no empty `event_id`, `courier_id` or timestamps (`SQLCheckOperator`) |
| `check_staging_coordinates` | lat/lon and the optional measures in range (`SQLCheckOperator`) |
| `merge_positions` | `MERGE` staging into `positions` on `event_id`, deriving `event_date`; queues the touched dates in `gold_dirty_dates`; appends the staged runs to `compactor_loads` (one transaction) |
| `check_fact_no_duplicates` | no `event_id` twice on the touched dates |
| `check_fact_freshness` | newest `received_at` within `freshness_hours` of the interval end |
| `refresh_gold` | delete-then-insert `courier_daily` and `positions_hourly` for the queued dates (one transaction) |
| `notify_failure` | runs only when a task failed: publishes to SNS (local: logs), then fails so the run is marked failed |

Idempotent per data interval: the compactor commits each stream range once,
the load empties staging first, the MERGE is keyed on `event_id` and records
its runs in the same transaction, the gold refresh is delete-then-insert.
`max_active_runs=1` because staging and the high-water mark are shared.
Checks are not retried (data does not fix itself); the other tasks are. A
failed check leaves the runs unloaded: every later DAG run retries them (and
fails) until the cause is fixed.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.sql.operators.sql import (
    SQLCheckOperator,
    SQLExecuteQueryOperator,
    SQLValueCheckOperator,
)
from airflow.sdk import TriggerRule, chain, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from courier_common import (
    AWS_CONN_ID,
    DAG_DIR,
    REPO_ROOT,  # noqa: F401  (re-exported for tests and tools)
    WAREHOUSE_CONN_ID,
    ecs_compactor_task,
    local_mode,
    local_paths,
    run_compactor,
    setting,
)
from courier_common import ecs_settings as _ecs_settings

log = logging.getLogger(__name__)

SQL_DIR = DAG_DIR / "sql"

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


def plan_load(raw_runs, after_version: int, compact_report=None, manifest_prefix: str | None = None) -> dict:
    """Validate the output of `compactor runs --after-version <after_version>` and turn it
    into the load plan: the runs oldest first, and the rows they wrote in total. With
    `manifest_prefix`, every manifest must be under it (the COPY reads what the
    environment's settings name, not a table of another environment)."""
    runs = _json(raw_runs)
    if not isinstance(runs, list):
        raise ValueError(f"compactor runs did not print a JSON list: {raw_runs!r}")
    plan = []
    for r in runs:
        missing = [k for k in RUN_KEYS if k not in r] + [
            f"report.{k}" for k in ("rows_written",) if k not in (r.get("report") or {})
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
        plan.append({"table_version": version, "run": int(r["run"]), "rows_written": rows, "files_added": files,
                     "manifest": r["manifest"] if files > 0 else None})  # fmt: skip
    plan.sort(key=lambda r: r["table_version"])
    versions = [r["table_version"] for r in plan]
    if len(set(versions)) != len(versions):
        raise ValueError(f"table versions listed twice: {versions}")
    if compact_report is not None:
        report = parse_report(compact_report)
        if report["committed"]:
            mine = [r for r in plan if r["table_version"] == int(report["table_version"])]
            if not mine:
                raise ValueError(
                    f"this hour's run committed table version {report['table_version']}, "
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
    "INSERT INTO compactor_runs_staging (table_version, compactor_run, rows_written, files_added, manifest)"
    " VALUES (%s, %s, %s, %s, %s)"
)


def _load_local(plan: dict) -> int:
    """Local substitute for Redshift COPY: read exactly the Parquet files listed in the
    manifests of the planned runs, oldest first, and stream them into positions_staging
    (emptied first), recording the runs in compactor_runs_staging; one transaction.
    Returns the rows loaded."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    columns = ", ".join(PARQUET_COLUMNS)
    loaded = 0
    conn = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID).get_conn()
    try:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE positions_staging")
            cur.execute("TRUNCATE compactor_runs_staging")
            for run in plan["runs"]:
                files = _manifest_files(run["manifest"]) if run["files_added"] > 0 else []
                log.info("run %s (table version %s): %d files", run["run"], run["table_version"], len(files))
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
                cur.execute(RUNS_STAGING_INSERT, (run["table_version"], run["run"], run["rows_written"],
                                                  run["files_added"], run["manifest"]))  # fmt: skip
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


def _load_redshift(plan: dict, iam_role: str) -> None:
    import jinja2
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(WAREHOUSE_CONN_ID)
    _check_warehouse_connection(conn)
    sql = jinja2.Template((SQL_DIR / "copy_staging.sql").read_text()).render(runs=plan["runs"], iam_role=iam_role)
    conn.get_hook().run(sql, autocommit=True, split_statements=True)


def _notify(context) -> str:
    dag_run = context["dag_run"]
    message = (
        f"courier_positions_hourly failed in {setting('environment')}: run {dag_run.run_id}, data interval "
        f"{context['data_interval_start']} - {context['data_interval_end']}. See the task logs."
    )
    if local_mode():
        log.error("FAILURE NOTIFICATION (local mode, not sent to SNS): %s", message)
    else:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        SnsHook(aws_conn_id=AWS_CONN_ID).publish_to_target(
            target_arn=setting("alerts_topic_arn"),
            message=message,
            subject=f"courier_positions_hourly failed ({setting('environment')})",
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
    create_tables = SQLExecuteQueryOperator(
        task_id="create_tables",
        conn_id=WAREHOUSE_CONN_ID,
        sql="{% include ('postgres/' if courier_local_mode() else '') ~ 'create_tables.sql' %}",
        split_statements=True,
        autocommit=True,
    )

    @task
    def loaded_version() -> int:
        """The last compactor table version merged into the warehouse (0: none)."""
        from airflow.sdk import BaseHook

        hook = BaseHook.get_connection(WAREHOUSE_CONN_ID).get_hook()
        (version,) = hook.get_first("SELECT COALESCE(MAX(table_version), 0) FROM compactor_loads")
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
    compact_ecs = ecs_compactor_task("compact_ecs", ecs, ["run"])
    runs_ecs = ecs_compactor_task(
        "runs_ecs", ecs, ["runs", "--after-version", "{{ ti.xcom_pull(task_ids='loaded_version') }}"]
    )

    @task
    def compact_local() -> dict:
        p = local_paths()
        report = parse_report(run_compactor(
            "run", "--data-dir", p["data_dir"], "--stream-name", p["stream_name"],
            "--table-uri", p["table_uri"], "--manifest-uri", p["manifest_uri"],
        ))  # fmt: skip
        log.info("compactor run report: %s", json.dumps(report))
        return report

    @task
    def runs_local(after_version: int) -> list:
        p = local_paths()
        return run_compactor(
            "runs", "--after-version", str(after_version), "--stream-name", p["stream_name"],
            "--table-uri", p["table_uri"], "--manifest-uri", p["manifest_uri"],
        )  # fmt: skip

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def runs_to_load(ti=None) -> dict:
        local = local_mode()
        raw = ti.xcom_pull(task_ids="runs_local" if local else "runs_ecs")
        if raw is None:
            raise ValueError("no compactor runs list in XCom")
        plan = plan_load(
            raw,
            int(ti.xcom_pull(task_ids="loaded_version")),
            ti.xcom_pull(task_ids="compact_local" if local else "compact_ecs"),
            manifests_location(),
        )
        for r in plan["runs"]:
            log.info("to load: run %s, table version %s, %s rows in %s files, %s",
                     r["run"], r["table_version"], r["rows_written"], r["files_added"], r["manifest"])  # fmt: skip
        log.info("%d runs after table version %s, %s rows", len(plan["runs"]), plan["after_version"], plan["rows_written"])
        return plan

    @task
    def load_staging(plan: dict) -> int:
        if local_mode():
            rows = _load_local(plan)
        else:
            _load_redshift(plan, setting("redshift_copy_role_arn"))
            rows = plan["rows_written"]
        log.info("staged %d runs (table versions %s..%s)", len(plan["runs"]), plan["after_version"] + 1, plan["table_version"])
        return rows

    check_kwargs = {"conn_id": WAREHOUSE_CONN_ID, "retries": 0}
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

    version = loaded_version()
    branch = choose_compactor()
    local = compact_local()
    local_runs = runs_local(version)
    plan = runs_to_load()
    loaded = load_staging(plan)
    notify = notify_failure()

    chain(create_tables, version)
    chain(branch, [ecs, local])
    chain(ecs, compact_ecs, runs_ecs)
    chain(version, runs_ecs)
    chain(local, local_runs)
    chain([runs_ecs, local_runs], plan)
    chain(
        loaded,
        [check_row_count, check_null_keys, check_coordinates],
        merge_positions,
    )
    chain(merge_positions, [check_duplicates, check_freshness], refresh_gold)
    # Every task but the branch (whose skips would skip the notifier) feeds it.
    chain(
        [create_tables, version, ecs, compact_ecs, runs_ecs, local, local_runs, plan, loaded, check_row_count,
         check_null_keys, check_coordinates, merge_positions, check_duplicates, check_freshness, refresh_gold],
        notify,
    )  # fmt: skip


courier_positions_hourly()
