"""The DAG files import cleanly and have the intended shape."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

HOURLY = "courier_positions_hourly"
MAINTENANCE = "courier_positions_maintenance"

EXPECTED_EDGES = {
    "check_on_time": {"migrate_warehouse"},
    "migrate_warehouse": {"loaded_version"},
    "loaded_version": {"runs_ecs", "runs_local"},
    "choose_compactor": {"ecs_settings", "compact_local"},
    "ecs_settings": {"compact_ecs", "runs_ecs"},
    "compact_ecs": {"runs_ecs"},
    "runs_ecs": {"runs_to_load"},
    "compact_local": {"runs_local"},
    "runs_local": {"runs_to_load"},
    "runs_to_load": {"load_staging", "reconcile", "check_freshness"},
    "load_staging": {"check_staging_row_count", "check_staging_no_null_keys", "check_staging_coordinates"},
    "check_staging_row_count": {"load_positions"},
    "check_staging_no_null_keys": {"load_positions"},
    "check_staging_coordinates": {"load_positions"},
    "load_positions": {"reconcile", "check_fact_no_duplicates", "check_freshness"},
    "reconcile": {"refresh_gold"},
    "check_fact_no_duplicates": {"refresh_gold"},
    "check_freshness": {"refresh_gold"},
    "refresh_gold": set(),
}

MAINTENANCE_EDGES = {
    "choose_compactor": {"ecs_settings", "optimize_local"},
    "ecs_settings": {"optimize_ecs", "vacuum_ecs"},
    "optimize_ecs": {"vacuum_ecs"},
    "vacuum_ecs": set(),
    "optimize_local": {"vacuum_local"},
    "vacuum_local": set(),
    "vacuum_analyze": set(),
}


def test_dag_files_import_without_errors_on_the_airflow_under_test(dagbag):
    import airflow

    wanted = os.environ.get("COURIER_TEST_AIRFLOW_VERSION")
    assert wanted, "run through scripts/test-airflow.sh, which names the Airflow version under test"
    assert airflow.__version__ == wanted
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) >= {HOURLY, MAINTENANCE}


def test_hourly_task_graph_is_the_designed_one(dagbag):
    dag = dagbag.dags[HOURLY]
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_EDGES


def test_hourly_dag_settings(dagbag):
    dag = dagbag.dags[HOURLY]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert set(dag.tags) == {"courier", "warehouse", "hourly"}
    assert dag.doc_md and all(t in dag.doc_md for t in EXPECTED_EDGES)
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"


CHECKS = {"check_on_time", "reconcile", "check_freshness"}


def test_hourly_retries_everything_but_checks(dagbag):
    dag = dagbag.dags[HOURLY]
    for t in dag.tasks:
        if t.task_id.startswith("check_") or t.task_id in CHECKS:
            assert t.retries == 0, t.task_id
        else:
            assert t.retries == 2, t.task_id
            assert t.retry_delay == timedelta(minutes=2)


@pytest.mark.parametrize("dag_id", [HOURLY, MAINTENANCE])
def test_every_task_and_the_run_are_bounded_in_time(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout <= timedelta(hours=3)
    for t in dag.tasks:
        assert t.execution_timeout is not None, t.task_id
        assert t.execution_timeout <= dag.dagrun_timeout, t.task_id
    if dag_id == HOURLY:  # an hourly run ends before the next one is due
        assert dag.dagrun_timeout < timedelta(hours=1)


def _callbacks(value):
    return value if isinstance(value, list) else [value] if value else []


@pytest.mark.parametrize("dag_id", [HOURLY, MAINTENANCE])
def test_failures_alert_through_a_notifier_on_every_task_and_the_run(dagbag, dag_id):
    from airflow.sdk import BaseNotifier

    dag = dagbag.dags[dag_id]
    assert not [t for t in dag.task_ids if "notify" in t], "no failing-on-purpose notifier task"
    (run_cb,) = _callbacks(dag.on_failure_callback)
    assert isinstance(run_cb, BaseNotifier) and type(run_cb).__name__ == "CourierAlert"
    for t in dag.tasks:
        callbacks = _callbacks(t.on_failure_callback)
        assert [type(c).__name__ for c in callbacks] == ["CourierAlert"], t.task_id
        assert all(isinstance(c, BaseNotifier) for c in callbacks)


def test_check_tasks_use_common_sql_check_operators(dagbag):
    dag = dagbag.dags[HOURLY]
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks if t.task_id.startswith("check_")}
    assert kinds.pop("check_staging_row_count") == "SQLValueCheckOperator"
    assert kinds.pop("check_on_time") == kinds.pop("check_freshness") == "_PythonDecoratedOperator"
    assert set(kinds.values()) == {"SQLCheckOperator"}
    assert type(dag.get_task("compact_ecs")).__name__ == "EcsRunTaskOperator"
    assert type(dag.get_task("runs_ecs")).__name__ == "EcsRunTaskOperator"


@pytest.mark.parametrize(
    ("dag_id", "task_id", "command"),
    [
        (HOURLY, "compact_ecs", ["run"]),
        (HOURLY, "runs_ecs", ["runs", "--after-version", "{{ ti.xcom_pull(task_ids='loaded_version') }}"]),
        (MAINTENANCE, "optimize_ecs", ["optimize", "--target-file-mib", "{{ courier_setting('optimize_target_file_mib') }}",
                                       "--min-files", "{{ courier_setting('optimize_min_files') }}"]),
        (MAINTENANCE, "vacuum_ecs", ["vacuum", "--retention-hours", "{{ courier_setting('vacuum_retention_hours') }}"]),
    ],
)  # fmt: skip
def test_ecs_tasks_run_the_compactor_subcommand_with_a_report_uri_and_are_bounded(dagbag, dag_id, task_id, command):
    op = dagbag.dags[dag_id].get_task(task_id)
    assert type(op).__name__ == "EcsRunTaskOperator"
    (override,) = op.overrides["containerOverrides"]
    report = "{{ courier_report_uri(dag_run.dag_id, run_id, ti.task_id, ti.try_number) }}"
    assert override["command"] == ["--output-uri", report, *command]
    assert "ecs_settings" in override["name"] and op.container_name == override["name"]
    # The report travels through S3, not through the task's last log line.
    assert op.do_xcom_push is False and op.launch_type == "FARGATE"
    assert op.reattach is True and op.deferrable is True and op.wait_for_completion is True
    # The waiter gives up with the task's timeout.
    assert op.waiter_delay * op.waiter_max_attempts <= op.execution_timeout.total_seconds()
    assert op.waiter_delay * (op.waiter_max_attempts + 1) > op.execution_timeout.total_seconds()


@pytest.mark.parametrize("dag_id", [HOURLY, MAINTENANCE])
def test_dag_has_owner_tags_and_docs(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.max_active_runs == 1
    assert dag.doc_md
    assert "courier" in dag.tags
    assert all(t.owner == "data-engineering" for t in dag.tasks)


def test_maintenance_task_graph_and_vacuum_analyze_autocommit(dagbag):
    dag = dagbag.dags[MAINTENANCE]
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == MAINTENANCE_EDGES
    assert all(t in dag.doc_md for t in MAINTENANCE_EDGES)
    task = dag.get_task("vacuum_analyze")
    assert task.autocommit is True
    assert set(dag.tags) == {"courier", "warehouse", "maintenance"}


@pytest.mark.parametrize(("dag_id", "task_id"), [(HOURLY, "compact_ecs"), (HOURLY, "runs_ecs"),
                                                 (MAINTENANCE, "optimize_ecs"), (MAINTENANCE, "vacuum_ecs")])
def test_ecs_report_uri_renders_to_s3_per_run_task_and_try(dagbag, monkeypatch, dag_id, task_id):
    """AWS mode: the container command names an S3 report URI unique per DAG run, task and
    try (rendered with the DAG's own macros, as the worker renders it)."""
    from types import SimpleNamespace

    for k in list(os.environ):
        if k.startswith(("COURIER_", "AIRFLOW_VAR_COURIER_", "AIRFLOW__COURIER__")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("COURIER_TABLE_URI", "s3://courier-lake-prod/positions")
    op = dagbag.dags[dag_id].get_task(task_id)
    run_id = "scheduled__2026-12-01T10:00:00+00:00"
    context = {
        "dag_run": SimpleNamespace(dag_id=dag_id), "run_id": run_id, "loaded_version": 7,
        "ti": SimpleNamespace(task_id=task_id, try_number=2,
                              xcom_pull=lambda task_ids: {"ecs_settings": {"container": "compactor"},
                                                          "loaded_version": 7}[task_ids]),
    }  # fmt: skip
    (override,) = op.render_template(op.overrides, context)["containerOverrides"]
    assert override["name"] == "compactor"
    assert override["command"][:2] == [
        "--output-uri",
        f"s3://courier-lake-prod/positions/_reports/{dag_id}/scheduled__2026-12-01T10_00_00_00_00/{task_id}"
        "/try-002-round-000.json",
    ]
    assert op.render_template(op.container_name, context) == "compactor"
