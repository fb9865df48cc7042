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
import subprocess
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
    # maintenance
    "optimize_target_file_mib": "128",
    "optimize_min_files": "2",
    "vacuum_retention_hours": "168",
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


def run_compactor(*args: str) -> dict | list:
    """Local mode: run `compactor <args>` and return its one-line JSON (stdout). Exit 3
    (another run committed this run number first) and 4 (SIGTERM before the commit,
    nothing committed) fail the try so that Airflow retries it."""
    cmd = [local_paths()["compactor_bin"], *args]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.stderr:
        log.info("compactor stderr:\n%s", proc.stderr)
    if proc.returncode == 3:
        raise RuntimeError("another compactor run committed this run number first; retrying")
    if proc.returncode == 4:
        raise RuntimeError("compactor interrupted before its commit (nothing committed); retrying")
    if proc.returncode != 0:
        raise RuntimeError(f"compactor exited {proc.returncode}: {proc.stderr[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("compactor printed nothing on stdout")
    return json.loads(lines[-1])


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


def ecs_compactor_task(task_id: str, ecs, command: list[str], **kwargs):
    """An EcsRunTaskOperator running `compactor <command>` (container command override);
    the task's last log line, the compactor's one-line JSON on stdout, goes to XCom.
    `command` items are templates (rendered by Airflow)."""
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    return EcsRunTaskOperator(
        task_id=task_id,
        aws_conn_id=AWS_CONN_ID,
        cluster=ecs["cluster"],
        task_definition=ecs["task_definition"],
        launch_type="FARGATE",
        network_configuration=ecs["network_configuration"],
        overrides={
            "containerOverrides": [
                {"name": "{{ ti.xcom_pull(task_ids='ecs_settings')['container'] }}", "command": command}
            ]
        },
        awslogs_group=ecs["awslogs_group"],
        awslogs_stream_prefix=ecs["awslogs_stream_prefix"],
        do_xcom_push=True,
        **kwargs,
    )
