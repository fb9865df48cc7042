"""Shared helpers of the courier DAGs (not a DAG file): run-time settings, the local
mode switch and the compactor invocations.

Every setting is looked up at run time (inside a task or a template, never at import),
first hit wins:

1. the Airflow Variable `courier_<key>` (also `AIRFLOW_VAR_COURIER_<KEY>`),
2. the environment variable `COURIER_<KEY>`,
3. the Airflow configuration option `[courier] <key>` (also `AIRFLOW__COURIER__<KEY>`;
   this is where Terraform puts them on MWAA, as `airflow_configuration_options`
   `"courier.<key>"`),
4. the default in `SETTINGS`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

log = logging.getLogger(__name__)

DAG_DIR = Path(__file__).resolve().parent
REPO_ROOT = DAG_DIR.parent
WAREHOUSE_CONN_ID = "courier_warehouse"
AWS_CONN_ID = "aws_default"

# Every key the DAGs read, with its default (None: required in the mode that uses it).
# Terraform (terraform/envs/*/main.tf, "courier.<key>") may only set keys listed here
# (tests/test_settings.py checks it).
SETTINGS: dict[str, str | None] = {
    "local_mode": "false",
    "environment": "local",  # named in alerts
    # AWS mode: the compactor ECS task
    "ecs_cluster": None,
    "compactor_task_definition": None,
    "compactor_container": "compactor",
    "compactor_subnets": None,  # comma-separated subnet ids
    "compactor_security_group": None,
    "compactor_log_group": None,
    "compactor_log_stream_prefix": None,  # default: the container name (the compactor module's awslogs-stream-prefix)
    # both modes: the lake (local mode: defaults under the repository)
    "table_uri": None,
    "manifest_uri": None,  # default <table_uri>/_manifests
    # AWS mode: the warehouse and alerts
    "redshift_copy_role_arn": None,
    "redshift_workgroup": None,  # checked against the courier_warehouse connection
    "redshift_database": None,  # checked against the courier_warehouse connection
    "alerts_topic_arn": None,
    # local mode
    "compactor_bin": None,  # default <repo>/target/debug/compactor
    "data_dir": None,  # default <repo>/data
    "stream_name": "courier-positions",
    "compactor_max_positions": None,  # local mode: --max-positions of each `compactor run` (default: the compactor's)
    # compactor reports: every subcommand writes its JSON report to a URI unique per DAG run,
    # task, try (and backlog round); the DAG reads the report there, never from logs.
    # Default <table_uri>/_reports (AWS: S3, the compactor task can write there; local: a directory).
    "reports_uri": None,
    # bounds, alerts and freshness
    "backlog_max_rounds": "6",  # local mode: `compactor run` rounds per DAG run while it reports a backlog
    "late_after_minutes": "90",  # a scheduled run starting this long after its interval end alerts "late"
    "freshness_max_lag_minutes": "180",  # newest loaded position vs the stream when a backlog remains
    "compactor_timeout_seconds": "2400",  # local mode: a compactor process running longer is killed
    # gold tables (refresh_gold.sql)
    "gold_max_speed_mps": "50",  # a step implying a higher speed is a bad fix: not counted in distance_km
    "gold_max_gap_minutes": "15",  # a step across a longer gap is not counted (the device was off)
    "gold_final_after_hours": "6",  # a day is final this long after its end (UTC)
    "gold_timezone": "America/Sao_Paulo",  # local_hour / local_date of positions_hourly
    # maintenance
    "optimize_target_file_mib": "128",
    "optimize_min_files": "2",
    "vacuum_retention_hours": "168",
    # retention policy, days per tier (courier_positions_maintenance; Terraform sets them as
    # courier.<tier>_retention_days from terraform/envs/<env>/terraform.tfvars). No default in
    # AWS mode: a missing one fails the run instead of deleting by a guess. Local mode:
    # RETENTION_LOCAL_DEFAULTS (the dev environment's policy).
    "lake_retention_days": None,  # Delta event_date partitions older than today - N are removed
    "dead_letter_retention_days": None,  # local mode: dead-letter files older than N days (AWS: S3 lifecycle)
    "warehouse_raw_retention_days": None,  # courier.positions rows with event_date before today - N
    "gold_retention_days": None,  # courier_gold rows with event_date before today - N
    # erasure and reload (courier_erasure.py, courier_reload.py)
    "dead_letter_uri": None,  # local mode: the dead letters erase rewrites (default: the compactor's, <table_uri>_dead_letter)
    "reload_manifest_uri": None,  # AWS mode: where the reload writes its COPY manifest (default <reports_uri>/reload-manifests)
}


def setting(name: str, default: str | None = None) -> str | None:
    """Run-time setting `name`: Variable, env `COURIER_<NAME>`, `[courier] name`, default
    (the argument, else `SETTINGS[name]`)."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(f"courier_{name}", default=None)
    except Exception:  # no metadata database / API reachable: fall back to the rest
        value = None
    if value is None or value == "":
        value = os.environ.get(f"COURIER_{name.upper()}")
    if value is None or value == "":
        try:
            from airflow.configuration import conf

            value = conf.get("courier", name, fallback=None)
        except Exception:  # no [courier] section: same as not set
            value = None
    if value is None or value == "":
        value = default if default is not None else SETTINGS.get(name)
    return value


def local_mode() -> bool:
    return (setting("local_mode") or "false").strip().lower() in ("1", "true", "yes", "on")


def local_paths() -> dict[str, str]:
    table_uri = setting("table_uri", str(REPO_ROOT / "lake" / "positions"))
    return {
        "compactor_bin": setting("compactor_bin", str(REPO_ROOT / "target" / "debug" / "compactor")),
        "data_dir": setting("data_dir", str(REPO_ROOT / "data")),
        "stream_name": setting("stream_name"),
        "table_uri": table_uri,
        "manifest_uri": setting("manifest_uri", f"{table_uri.rstrip('/')}/_manifests"),
    }


def reports_base() -> str:
    """Where the compactor writes its reports: `reports_uri`, else `<table_uri>/_reports`
    (a leading underscore: Delta vacuum leaves it alone)."""
    table_uri = local_paths()["table_uri"] if local_mode() else setting("table_uri")
    base = setting("reports_uri", f"{table_uri.rstrip('/')}/_reports" if table_uri else None)
    if not base:
        raise ValueError("no reports location: set reports_uri or table_uri")
    return base.rstrip("/")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]", "_", str(part))


def report_prefix(dag_id: str, run_id: str, task_id: str) -> str:
    """`<reports>/<dag>/<run>/<task>`: every try of a task writes under it."""
    return f"{reports_base()}/{_safe(dag_id)}/{_safe(run_id)}/{_safe(task_id)}"


def report_uri(dag_id: str, run_id: str, task_id: str, try_number: int, round_no: int = 0) -> str:
    """The report URI of one try (and backlog round) of a task: unique, so a retry never
    reads an earlier try's report."""
    return f"{report_prefix(dag_id, run_id, task_id)}/try-{int(try_number):03d}-round-{int(round_no):03d}.json"


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def read_report(uri: str):
    """The JSON a compactor subcommand wrote at `uri` (`--output-uri`): a local file, or an
    S3 object read with the aws_default connection."""
    if uri.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, key = _split_s3(uri)
        return json.loads(S3Hook(aws_conn_id=AWS_CONN_ID).read_key(key, bucket_name=bucket))
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise FileNotFoundError(f"the compactor wrote no report at {uri}")
    return json.loads(path.read_text())


def latest_report(dag_id: str, run_id: str, task_id: str):
    """The report of the last try (last round) of `task_id` in this DAG run, or None."""
    prefix = report_prefix(dag_id, run_id, task_id)
    if prefix.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, key = _split_s3(prefix)
        names = S3Hook(aws_conn_id=AWS_CONN_ID).list_keys(bucket_name=bucket, prefix=key + "/") or []
        names = [f"s3://{bucket}/{n}" for n in names if n.endswith(".json")]
    else:
        directory = Path(prefix)
        names = [str(p) for p in directory.glob("try-*.json")] if directory.is_dir() else []
    if not names:
        return None
    return read_report(max(names))


def run_compactor(*args: str, output_uri: str, timeout_s: float | None = None):
    """Local mode: run `compactor <args> --output-uri <output_uri>` and return the JSON report
    it wrote there (stdout is only logged). Exit 3 (another run committed this run number
    first) and 4 (SIGTERM before the commit, nothing committed) fail the try so that Airflow
    retries it. A process running longer than `timeout_s` (setting compactor_timeout_seconds)
    is killed; so is the process when the task itself times out."""
    cmd = [local_paths()["compactor_bin"], "--output-uri", output_uri, *args]
    timeout_s = float(timeout_s if timeout_s is not None else setting("compactor_timeout_seconds"))
    Path(output_uri).parent.mkdir(parents=True, exist_ok=True)
    log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TimeoutError(f"compactor {args[0]} ran longer than {timeout_s:g} s and was killed") from None
    finally:
        if proc.poll() is None:  # the task was interrupted (execution_timeout, SIGTERM): no orphan
            proc.kill()
            proc.wait()
    if stderr:
        log.info("compactor stderr:\n%s", stderr[-20000:])
    if proc.returncode == 3:
        raise RuntimeError("another compactor run committed this run number first; retrying")
    if proc.returncode == 4:
        raise RuntimeError("compactor interrupted before its commit (nothing committed); retrying")
    if proc.returncode != 0:
        raise RuntimeError(f"compactor exited {proc.returncode}: {stderr[-2000:]}")
    return read_report(output_uri)


def ecs_settings() -> dict:
    """AWS mode: where and how to run the compactor task (EcsRunTaskOperator arguments)."""
    container = setting("compactor_container")
    subnets = [s.strip() for s in (setting("compactor_subnets") or "").split(",") if s.strip()]
    security_group = setting("compactor_security_group")
    missing = [k for k, v in (("ecs_cluster", setting("ecs_cluster")),
                              ("compactor_task_definition", setting("compactor_task_definition")),
                              ("compactor_subnets", subnets), ("compactor_security_group", security_group),
                              ("compactor_log_group", setting("compactor_log_group"))) if not v]  # fmt: skip
    if missing:
        raise ValueError(f"AWS mode needs the settings {missing} (Variable courier_<key>, env COURIER_<KEY> "
                         "or [courier] <key>)")  # fmt: skip
    return {
        "cluster": setting("ecs_cluster"),
        "task_definition": setting("compactor_task_definition"),
        "container": container,
        "network_configuration": {
            "awsvpcConfiguration": {"subnets": subnets, "securityGroups": [security_group], "assignPublicIp": "DISABLED"}
        },
        "awslogs_group": setting("compactor_log_group"),
        "awslogs_stream_prefix": f"{setting('compactor_log_stream_prefix', container)}/{container}",
    }


ECS_WAITER_DELAY_S = 15


def ecs_compactor_task(task_id: str, ecs, command: list[str], execution_timeout: timedelta, **kwargs):
    """An EcsRunTaskOperator running `compactor --output-uri <report uri> <command>`
    (container command override). The report reaches the DAG through S3 (`--output-uri`, a
    URI unique per DAG run, task and try), never through the task's log lines. `container_name`
    names the compactor container, `reattach` picks up a task still running after a worker
    restart (by its started-by tag) instead of starting a second one, the waiter gives up with
    the task's `execution_timeout`, and the wait is deferred to the triggerer (no worker slot
    held for the length of a compactor run). `command` items are templates."""
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    report = (
        "{{ courier_report_uri(dag_run.dag_id, run_id, ti.task_id, ti.try_number) }}"
    )
    container = "{{ ti.xcom_pull(task_ids='ecs_settings')['container'] }}"
    return EcsRunTaskOperator(
        task_id=task_id,
        aws_conn_id=AWS_CONN_ID,
        cluster=ecs["cluster"],
        task_definition=ecs["task_definition"],
        launch_type="FARGATE",
        network_configuration=ecs["network_configuration"],
        container_name=container,
        overrides={"containerOverrides": [{"name": container, "command": ["--output-uri", report, *command]}]},
        awslogs_group=ecs["awslogs_group"],
        awslogs_stream_prefix=ecs["awslogs_stream_prefix"],
        reattach=True,
        deferrable=True,
        waiter_delay=ECS_WAITER_DELAY_S,
        waiter_max_attempts=max(1, int(execution_timeout.total_seconds() // ECS_WAITER_DELAY_S)),
        execution_timeout=execution_timeout,
        do_xcom_push=False,
        **kwargs,
    )


# --- alerts ----------------------------------------------------------------------------------


def log_link(dag_id: str, run_id: str, task_id: str | None, try_number: int | None) -> str:
    """The Airflow UI page of a task try (or of the run), from [api] base_url."""
    from urllib.parse import quote

    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback=None) or "http://localhost:8080"
    except Exception:  # no configuration: a relative link is still useful
        base = ""
    url = f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    if task_id:
        url += f"/tasks/{quote(task_id, safe='')}"
        if try_number:
            url += f"?try_number={int(try_number)}"
    return url


def alert_message(context, kind: str) -> tuple[str, str]:
    """(subject, message) naming the DAG, the task, the run and a log link."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "?")
    task_id = getattr(ti, "task_id", None)
    try_number = getattr(ti, "try_number", None)
    environment = setting("environment")
    subject = f"[courier {environment}] {dag_id} {kind}"
    parts = [f"DAG {dag_id}", f"run {run_id}"]
    if task_id:
        parts.append(f"task {task_id} (try {try_number})")
    reason = context.get("exception") or context.get("reason")
    if reason:
        parts.append(f"error: {str(reason)[:500]}")
    parts.append(f"log: {log_link(dag_id, run_id, task_id, try_number)}")
    return subject[:100], f"{subject}: " + "; ".join(parts)


def send_alert(subject: str, message: str) -> None:
    """SNS (`alerts_topic_arn`) in AWS mode, the task log in local mode."""
    if local_mode():
        log.error("COURIER ALERT (local mode, not sent to SNS): %s", message)
        return
    from airflow.providers.amazon.aws.hooks.sns import SnsHook

    SnsHook(aws_conn_id=AWS_CONN_ID).publish_to_target(
        target_arn=setting("alerts_topic_arn"), message=message, subject=subject
    )
    log.error("COURIER ALERT published to SNS: %s", message)


def _notifier_base():
    from airflow.sdk import BaseNotifier

    return BaseNotifier


class CourierAlert(_notifier_base()):
    """Failure notifier of both DAGs (task and DAG `on_failure_callback`): SNS in AWS mode,
    the log in local mode."""

    template_fields = ()

    def __init__(self, kind: str = "failed"):
        super().__init__()
        self.kind = kind

    def notify(self, context) -> None:
        send_alert(*alert_message(context, self.kind))


def warehouse_hook():
    """The hook of the `courier_warehouse` connection (Redshift or PostgreSQL)."""
    from airflow.sdk import Connection

    return Connection.get(WAREHOUSE_CONN_ID).get_hook()


# --- warehouse migrations --------------------------------------------------------------------

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version VARCHAR(128) NOT NULL, applied_at TIMESTAMP NOT NULL, PRIMARY KEY (version))"
)


def migration_files(postgres: bool) -> list[Path]:
    """The versioned migrations, in order: `sql/migrations/V<nnn>__<what>.sql` (Redshift) or
    `sql/postgres/migrations/` (local mode)."""
    directory = DAG_DIR / "sql" / ("postgres/migrations" if postgres else "migrations")
    files = sorted(directory.glob("V*__*.sql"), key=lambda p: int(p.name[1:].split("__", 1)[0]))
    if not files:
        raise FileNotFoundError(f"no migrations in {directory}")
    return files


def sql_statements(text: str) -> list[str]:
    """The statements of a SQL file, comments-only chunks dropped."""
    import sqlparse

    out = []
    for statement in sqlparse.split(text):
        code = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
        if code:
            out.append(statement.strip().rstrip(";"))
    return out


def apply_migrations(conn, postgres: bool) -> list[str]:
    """Apply the migrations not yet in `schema_migrations`, oldest first, each in its own
    transaction with its row in `schema_migrations` (a DB-API connection, not autocommit).
    The table is locked first: two loads migrating at once apply each migration once.
    Returns the versions applied now."""
    applied_now = []
    cur = conn.cursor()  # no `with`: not every DB-API driver's cursor is a context manager
    try:
        cur.execute(MIGRATIONS_TABLE)
        conn.commit()
        for path in migration_files(postgres):
            version = path.stem
            cur.execute("LOCK TABLE schema_migrations" if postgres else "LOCK schema_migrations")
            cur.execute("SELECT COUNT(*) FROM schema_migrations WHERE version = %s", (version,))
            if cur.fetchone()[0]:
                conn.commit()
                continue
            for statement in sql_statements(path.read_text()):
                cur.execute(statement)
            cur.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                        (version, datetime.now(timezone.utc).replace(tzinfo=None)))  # fmt: skip
            conn.commit()
            log.info("applied warehouse migration %s", version)
            applied_now.append(version)
    finally:
        cur.close()
    return applied_now


def migrate_warehouse_now() -> list[str]:
    """The `migrate_warehouse` task of every DAG that writes the warehouse: the migrations of
    the `courier_warehouse` connection's dialect not applied yet ([`apply_migrations`]);
    a failed one is rolled back. Returns the versions applied now."""
    conn = warehouse_hook().get_conn()
    try:
        applied = apply_migrations(conn, postgres=local_mode())
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    log.info("migrations applied now: %s", applied or "none (up to date)")
    return applied


# --- the lake's row counts per event_date (the daily lake-versus-warehouse check) -------------

DELTA_LOG = "_delta_log"
PARTITION_COLUMN = "event_date"


class _LakeLog:
    """The files of a Delta table's `_delta_log/`: a local directory or an S3 prefix (read
    with the aws_default connection; the MWAA execution role may list and read exactly
    `<table_prefix>/_delta_log/`)."""

    def __init__(self, table_uri: str):
        self.table_uri = table_uri.rstrip("/")
        if self.table_uri.startswith("s3://"):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            self.hook = S3Hook(aws_conn_id=AWS_CONN_ID)
            self.bucket, self.prefix = _split_s3(f"{self.table_uri}/{DELTA_LOG}/")
        else:
            self.hook = None
            self.directory = Path(self.table_uri.removeprefix("file://")) / DELTA_LOG

    def names(self) -> list[str]:
        if self.hook is not None:
            keys = self.hook.list_keys(bucket_name=self.bucket, prefix=self.prefix) or []
            return [k[len(self.prefix):] for k in keys if "/" not in k[len(self.prefix):]]
        return [p.name for p in self.directory.iterdir() if p.is_file()] if self.directory.is_dir() else []

    def read(self, name: str) -> bytes:
        if self.hook is not None:
            return self.hook.get_key(self.prefix + name, bucket_name=self.bucket).get()["Body"].read()
        return (self.directory / name).read_bytes()


_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")


def _partition_values(value) -> dict:
    if isinstance(value, dict):
        return value
    return dict(value or [])  # a Parquet map reads as a list of (key, value) pairs


def lake_rows_by_date(table_uri: str, version: int) -> dict[str, int]:
    """Rows of the Delta table at `table_uri` as of table `version`, per `event_date`
    (ISO date strings): the `numRecords` statistics of the files active at that version,
    summed by their `event_date` partition value. Read from the Delta log alone (the
    newest checkpoint at or before `version`, then the JSON commits up to it), so it needs
    no data file and no Delta library, and reads the same in local and AWS mode. The
    compactor writes statistics for every file (its `status` counts rows the same way);
    a file without them fails the count. Optimize commits (`dataChange=false`) move rows
    between files of the same date: the counts per date do not change."""
    log = _LakeLog(table_uri)
    names = log.names()
    if not names:
        if version > 0:
            raise ValueError(f"no Delta log at {table_uri}, but the warehouse loaded table version {version}")
        return {}
    commits = {int(m.group(1)): n for n in names if (m := _COMMIT.match(n))}
    parts: dict[int, dict[int, str]] = {}
    totals: dict[int, int] = {}
    for n in names:
        if m := _CHECKPOINT.match(n):
            v = int(m.group(1))
            parts.setdefault(v, {})[int(m.group(2) or 1)] = n
            totals[v] = int(m.group(3) or 1)
    complete = [v for v, p in parts.items() if v <= version and len(p) == totals[v]]
    start = max(complete, default=-1)
    active: dict[str, tuple[dict, str | None]] = {}
    if start >= 0:
        import io

        import pyarrow.parquet as pq

        for _, name in sorted(parts[start].items()):
            table = pq.read_table(io.BytesIO(log.read(name)), columns=["add"])
            for add in table.column("add").to_pylist():
                if add is not None:
                    active[add["path"]] = (_partition_values(add.get("partitionValues")), add.get("stats"))
    for v in range(start + 1, version + 1):
        if v not in commits:
            raise ValueError(f"the Delta log at {table_uri} lacks commit {v} (and no checkpoint covers it): "
                             f"cannot count the lake as of table version {version}")  # fmt: skip
        for line in log.read(commits[v]).decode().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                active[add["path"]] = (_partition_values(add.get("partitionValues")), add.get("stats"))
            elif "remove" in action:
                active.pop(action["remove"]["path"], None)
    counts: dict[str, int] = {}
    for path, (partition, stats) in active.items():
        if not stats:
            raise ValueError(f"{path} in {table_uri} has no statistics: cannot count its rows")
        date = partition.get(PARTITION_COLUMN)
        if not date:
            raise ValueError(f"{path} in {table_uri} has no {PARTITION_COLUMN} partition value")
        counts[date] = counts.get(date, 0) + int(json.loads(stats)["numRecords"])
    return counts


def lake_warehouse_mismatches(lake: dict[str, int], warehouse: dict[str, dict], version: int) -> list[str]:
    """Compare the lake's rows per event_date (as of the table version the warehouse has
    loaded) with the warehouse's: per date, lake = rows in courier.positions + duplicates
    the load skipped (late copies of event ids already loaded; the ledger counts them per
    date), and courier.positions holds what the ledger says was inserted. Returns the
    broken dates with their numbers (empty: every date reconciles)."""
    broken = []
    for date in sorted(set(lake) | set(warehouse)):
        w = warehouse.get(date, {})
        rows, skipped = int(w.get("fact_rows", 0)), int(w.get("duplicates_skipped", 0))
        inserted, in_lake = int(w.get("rows_inserted", 0)), int(lake.get(date, 0))
        if in_lake != rows + skipped:
            broken.append(f"event_date {date}: lake {in_lake} rows (table version {version}) != warehouse {rows} "
                          f"rows in courier.positions + {skipped} duplicates skipped")  # fmt: skip
        if rows != inserted:
            broken.append(f"event_date {date}: courier.positions holds {rows} rows, the load ledger inserted {inserted}")
    return broken


# --- the lake's files and runs per table version (erasure and reload) ------------------------


def lake_active_files(table_uri: str, version: int) -> dict[str, tuple[dict, str | None, int | None]]:
    """The data files of the Delta table at `table_uri` active at table `version`, from the
    Delta log alone (the newest complete checkpoint at or before it, then the JSON
    commits): path (relative to the table, URL-encoded as in the log) -> (partition
    values, stats JSON, size in bytes)."""
    log = _LakeLog(table_uri)
    names = log.names()
    commits = {int(m.group(1)): n for n in names if (m := _COMMIT.match(n))}
    parts: dict[int, dict[int, str]] = {}
    totals: dict[int, int] = {}
    for n in names:
        if m := _CHECKPOINT.match(n):
            v = int(m.group(1))
            parts.setdefault(v, {})[int(m.group(2) or 1)] = n
            totals[v] = int(m.group(3) or 1)
    complete = [v for v, p in parts.items() if v <= version and len(p) == totals[v]]
    start = max(complete, default=-1)
    active: dict[str, tuple[dict, str | None, int | None]] = {}
    if start >= 0:
        import io

        import pyarrow.parquet as pq

        for _, name in sorted(parts[start].items()):
            table = pq.read_table(io.BytesIO(log.read(name)), columns=["add"])
            for add in table.column("add").to_pylist():
                if add is not None:
                    active[add["path"]] = (_partition_values(add.get("partitionValues")), add.get("stats"),
                                           add.get("size"))  # fmt: skip
    for v in range(start + 1, version + 1):
        if v not in commits:
            raise ValueError(f"the Delta log at {table_uri} lacks commit {v} (and no checkpoint covers it): "
                             f"cannot list the files of table version {version}")  # fmt: skip
        for action in _commit_actions(log, commits[v]):
            if "add" in action:
                add = action["add"]
                active[add["path"]] = (_partition_values(add.get("partitionValues")), add.get("stats"), add.get("size"))
            elif "remove" in action:
                active.pop(action["remove"]["path"], None)
    return active


def _commit_actions(log: _LakeLog, name: str) -> list[dict]:
    return [json.loads(line) for line in log.read(name).decode().splitlines() if line.strip()]


def lake_runs_between(table_uri: str, after: int, before: int) -> list[int]:
    """The table versions in (after, before) committed by a compactor *run* (a commit with
    a `txn` action: the run's stream checkpoint), read from the Delta log: what
    `compactor runs --after-version <after>` lists below `before`. Optimize and erase
    commits carry no `txn`."""
    log = _LakeLog(table_uri)
    commits = {int(m.group(1)): n for n in log.names() if (m := _COMMIT.match(n))}
    runs = []
    for v in range(after + 1, before):
        if v not in commits:
            raise ValueError(f"the Delta log at {table_uri} lacks commit {v}: cannot tell whether it is a "
                             f"compactor run the warehouse must load first")  # fmt: skip
        if any("txn" in action for action in _commit_actions(log, commits[v])):
            runs.append(v)
    return runs


# --- the retention policy (courier_positions_maintenance) -----------------------------------

# Local mode's policy when a tier is not set: the dev environment's (terraform/envs/dev).
RETENTION_LOCAL_DEFAULTS = {"lake": 30, "dead_letter": 14, "warehouse_raw": 30, "gold": 90}


def _retention_days(tier: str, value: str | None) -> int:
    key = f"{tier}_retention_days"
    if value is None or str(value).strip() == "":
        raise ValueError(f"no {key} setting: AWS mode never deletes by a default. Set the {tier} retention in "
                         f"terraform/envs/<env>/terraform.tfvars (Airflow option courier.{key}), or the Variable "
                         f"courier_{key}")  # fmt: skip
    try:
        days = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{key} must be a whole number of days, got {value!r}") from None
    if days < 1:
        raise ValueError(f"{key} must be at least 1 day, got {days}")
    return days


def retention_policy(now: datetime) -> dict:
    """The retention policy at `now` (UTC): per tier its days and its cutoff date. A row or
    partition is expired when its `event_date` (UTC) is before the cutoff, today - days, so
    a policy of N days keeps today and the N days before it. `compare_from`: the first date
    inside both the lake's and the warehouse's raw windows (the daily lake-versus-warehouse
    check compares only those dates). The four day counts come from settings (Terraform in
    AWS mode, where none has a default; RETENTION_LOCAL_DEFAULTS in local mode)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now = now.astimezone(timezone.utc)
    local = local_mode()

    def default(tier: str) -> str | None:
        return str(RETENTION_LOCAL_DEFAULTS[tier]) if local else None

    days = {
        "lake": _retention_days("lake", setting("lake_retention_days", default("lake"))),
        "dead_letter": _retention_days("dead_letter", setting("dead_letter_retention_days", default("dead_letter"))),
        "warehouse_raw": _retention_days("warehouse_raw", setting("warehouse_raw_retention_days",
                                                                  default("warehouse_raw"))),
        "gold": _retention_days("gold", setting("gold_retention_days", default("gold"))),
    }  # fmt: skip
    today = now.date()
    policy = {"now": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "today": today.isoformat()}
    for tier, n in days.items():
        policy[f"{tier}_retention_days"] = n
        policy[f"{tier}_cutoff"] = (today - timedelta(days=n)).isoformat()
    policy["compare_from"] = max(policy["lake_cutoff"], policy["warehouse_raw_cutoff"])
    return policy


def retention_dead_letter_uri() -> str:
    """Local mode: the dead-letter directory `compactor run` writes to (the `dead_letter_uri`
    setting, else the compactor's default `<table_uri>_dead_letter`: compact_local passes none)."""
    return setting("dead_letter_uri", f"{local_paths()['table_uri'].rstrip('/')}_dead_letter")


def check_retention_report(report, policy: dict) -> dict:
    """The JSON report of `compactor retention`, checked against the policy the DAG run
    computed: the compactor must have cut at the same date (the warehouse and the daily check
    use it too) and removed no partition inside the window. Returns the report."""
    if not isinstance(report, dict):
        raise ValueError(f"compactor retention report is not a JSON object: {report!r}")
    missing = [k for k in ("cutoff_date", "partitions_removed", "files_removed", "rows_removed") if k not in report]
    if missing:
        raise ValueError(f"compactor retention report lacks {missing}: {report!r}")
    if str(report["cutoff_date"]) != policy["lake_cutoff"]:
        raise ValueError(f"compactor retention cut the lake at {report['cutoff_date']}, the DAG run's policy at "
                         f"{policy['lake_cutoff']} ({policy['lake_retention_days']} days before {policy['today']}): "
                         "check the compactor's --now and --keep-days")  # fmt: skip
    too_new = [p for p in report["partitions_removed"] if str(p).rpartition("=")[2] >= policy["lake_cutoff"]]
    if too_new:
        raise ValueError(f"compactor retention removed partitions inside the window (from {policy['lake_cutoff']} "
                         f"on): {too_new}")  # fmt: skip
    return report
