"""The DAG files import cleanly and have the intended shape."""

from __future__ import annotations

from datetime import timedelta

import pytest

HOURLY = "courier_positions_hourly"
MAINTENANCE = "courier_positions_maintenance"

EXPECTED_EDGES = {
    "create_tables": {"loaded_version", "notify_failure"},
    "loaded_version": {"runs_ecs", "runs_local", "notify_failure"},
    "choose_compactor": {"ecs_settings", "compact_local"},
    "ecs_settings": {"compact_ecs", "runs_ecs", "notify_failure"},
    "compact_ecs": {"runs_ecs", "notify_failure"},
    "runs_ecs": {"runs_to_load", "notify_failure"},
    "compact_local": {"runs_local", "notify_failure"},
    "runs_local": {"runs_to_load", "notify_failure"},
    "runs_to_load": {"load_staging", "notify_failure"},
    "load_staging": {
        "check_staging_row_count",
        "check_staging_no_null_keys",
        "check_staging_coordinates",
        "notify_failure",
    },
    "check_staging_row_count": {"merge_positions", "notify_failure"},
    "check_staging_no_null_keys": {"merge_positions", "notify_failure"},
    "check_staging_coordinates": {"merge_positions", "notify_failure"},
    "merge_positions": {"check_fact_no_duplicates", "check_fact_freshness", "notify_failure"},
    "check_fact_no_duplicates": {"refresh_gold", "notify_failure"},
    "check_fact_freshness": {"refresh_gold", "notify_failure"},
    "refresh_gold": {"notify_failure"},
    "notify_failure": set(),
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


def test_dag_files_import_without_errors(dagbag):
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


def test_hourly_retries_everything_but_checks_and_the_notifier(dagbag):
    dag = dagbag.dags[HOURLY]
    for t in dag.tasks:
        if t.task_id.startswith("check_") or t.task_id == "notify_failure":
            assert t.retries == 0, t.task_id
        else:
            assert t.retries == 2, t.task_id
            assert t.retry_delay == timedelta(minutes=2)


def test_notifier_fires_on_any_failure(dagbag):
    dag = dagbag.dags[HOURLY]
    notify = dag.get_task("notify_failure")
    assert notify.trigger_rule == "one_failed"
    assert set(notify.upstream_task_ids) == set(dag.task_ids) - {"notify_failure", "choose_compactor"}


def test_check_tasks_use_common_sql_check_operators(dagbag):
    dag = dagbag.dags[HOURLY]
    kinds = {t.task_id: type(t).__name__ for t in dag.tasks if t.task_id.startswith("check_")}
    assert kinds.pop("check_staging_row_count") == "SQLValueCheckOperator"
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
def test_ecs_tasks_run_the_compactor_subcommand_and_push_its_last_log_line(dagbag, dag_id, task_id, command):
    op = dagbag.dags[dag_id].get_task(task_id)
    assert type(op).__name__ == "EcsRunTaskOperator"
    (override,) = op.overrides["containerOverrides"]
    assert override["command"] == command
    assert "ecs_settings" in override["name"]
    assert op.do_xcom_push is True and op.launch_type == "FARGATE"


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
