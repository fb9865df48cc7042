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
    "runs_to_load": {"load_staging", "reconcile", "check_freshness", "backlog_left"},
    "load_staging": {"check_staging_row_count", "check_staging_no_null_keys", "check_staging_coordinates"},
    "check_staging_row_count": {"load_positions"},
    "check_staging_no_null_keys": {"load_positions"},
    "check_staging_coordinates": {"load_positions"},
    "load_positions": {"reconcile", "check_fact_no_duplicates", "check_freshness"},
    "reconcile": {"refresh_gold", "backlog_left"},
    "backlog_left": {"trigger_backlog_run"},
    "trigger_backlog_run": set(),
    "check_fact_no_duplicates": {"refresh_gold"},
    "check_freshness": {"refresh_gold"},
    "refresh_gold": set(),
}

MAINTENANCE_EDGES = {
    "retention_policy": {"retention_local", "retention_ecs", "retention_warehouse", "reconcile_lake_and_warehouse"},
    "choose_compactor": {"ecs_settings", "retention_local"},
    "ecs_settings": {"retention_ecs", "optimize_ecs", "vacuum_ecs"},
    "retention_ecs": {"optimize_ecs"},
    "optimize_ecs": {"vacuum_ecs"},
    "vacuum_ecs": set(),
    "retention_local": {"optimize_local"},
    "optimize_local": {"vacuum_local"},
    "vacuum_local": set(),
    "retention_warehouse": {"vacuum_analyze"},
    "vacuum_analyze": set(),
    "reconcile_lake_and_warehouse": set(),
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


CHECKS = {"check_on_time", "reconcile", "check_freshness", "backlog_left"}


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
        (MAINTENANCE, "retention_ecs", ["retention",
                                        "--keep-days", "{{ ti.xcom_pull(task_ids='retention_policy')['lake_retention_days'] }}",
                                        "--now", "{{ ti.xcom_pull(task_ids='retention_policy')['now'] }}"]),
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


def test_a_backlog_left_triggers_another_run_of_the_hourly_dag(dagbag):
    """Both modes, AWS in particular (one ECS compactor task per DAG run): after a load that
    reconciled, a backlog the compactor reported triggers another run of this DAG."""
    dag = dagbag.dags[HOURLY]
    gate, trigger = dag.get_task("backlog_left"), dag.get_task("trigger_backlog_run")
    assert type(gate).__name__ == "_ShortCircuitDecoratedOperator"
    assert type(trigger).__name__ == "TriggerDagRunOperator"
    assert trigger.trigger_dag_id == HOURLY and trigger.wait_for_completion is False
    assert trigger.conf == {"backlog_of": "{{ run_id }}"}
    assert gate.upstream_task_ids == {"reconcile", "runs_to_load"}


def test_in_aws_mode_the_ecs_compactor_reports_backlog_is_read_from_its_report_and_triggers_a_run(
        dagbag, monkeypatch, tmp_path):  # fmt: skip
    """AWS mode without AWS: the reports location is a directory here (S3 on MWAA, the same
    code path but the hook). The last try of compact_ecs says backlog: the plan says so and
    backlog_left lets trigger_backlog_run go; a later try that read to the end does not."""
    import json
    from types import SimpleNamespace

    import courier_common
    import courier_positions_hourly as hourly

    for k in list(os.environ):
        if k.startswith(("COURIER_", "AIRFLOW_VAR_COURIER_", "AIRFLOW__COURIER__")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("COURIER_TABLE_URI", "s3://courier-lake-prod/positions")
    monkeypatch.setenv("COURIER_REPORTS_URI", str(tmp_path / "reports"))
    run_id = "scheduled__2026-12-01T10:00:00+00:00"
    manifest = "s3://courier-lake-prod/positions/_manifests/v00000000000000000008.json"
    counts = {"records_read": 3, "positions_decoded": 900, "duplicates_dropped": 0, "dead_lettered": 0, "rows_written": 900}
    compact = {"run": 7, "committed": True, "rows_written": 900, "files_added": 1, "table_version": 8,
               "manifest": manifest, "backlog": True}  # fmt: skip
    runs = [{"table_version": 8, "run": 7, "report": counts, "files_added": 1, "manifest": manifest}]

    def write(task_id, try_number, report):
        uri = courier_common.report_uri(HOURLY, run_id, task_id, try_number)
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        with open(uri, "w") as f:
            json.dump(report, f)

    write("compact_ecs", 1, compact)
    write("runs_ecs", 1, runs)
    plan = hourly.plan_from_reports(run_id, 7)
    assert plan["backlog"] is True and plan["rounds"] == 1 and plan["rows_written"] == 900
    gate = dagbag.dags[HOURLY].get_task("backlog_left")
    assert gate.python_callable(plan, dag_run=SimpleNamespace(run_id=run_id)) is True
    write("compact_ecs", 2, {**compact, "backlog": False})  # a retry read to the end: the last try wins
    plan = hourly.plan_from_reports(run_id, 7)
    assert plan["backlog"] is False
    assert gate.python_callable(plan, dag_run=SimpleNamespace(run_id=run_id)) is False
