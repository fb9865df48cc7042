"""Run-time settings and the compactor report contract (no Airflow run needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import courier_common
import courier_positions_hourly as hourly
from conftest import DAGS_DIR, REPO_ROOT


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"COURIER_LOCAL_MODE": "true"}, True),
        ({"AIRFLOW_VAR_COURIER_LOCAL_MODE": "TRUE"}, True),
        ({"AIRFLOW_VAR_COURIER_LOCAL_MODE": "false", "COURIER_LOCAL_MODE": "true"}, False),  # Variable wins
    ],
)
def test_local_mode_switch(monkeypatch, env, expected):
    monkeypatch.delenv("COURIER_LOCAL_MODE", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_COURIER_LOCAL_MODE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert hourly.local_mode() is expected


def _variable_reads_while_parsing(monkeypatch, folder) -> tuple[list, dict]:
    """Parse `folder` with a DagBag while recording every Variable.get (recorded, not
    raised: setting() swallows exceptions, so a raising probe would go unnoticed)."""
    from airflow.sdk import Variable

    from conftest import _dagbag_class

    reads = []
    original = Variable.get

    def recording_get(key, *args, **kwargs):
        reads.append(key)
        return original(key, *args, **kwargs)

    monkeypatch.setattr(Variable, "get", staticmethod(recording_get))
    bag = _dagbag_class()(dag_folder=str(folder))
    return reads, bag.dags


def test_importing_the_dags_reads_no_variable(monkeypatch, tmp_path):
    for name in ("courier_common.py", "courier_positions_hourly.py", "courier_positions_maintenance.py"):
        (tmp_path / name).write_text((DAGS_DIR / name).read_text())
    (tmp_path / "sql").symlink_to(DAGS_DIR / "sql")
    reads, dags = _variable_reads_while_parsing(monkeypatch, tmp_path)
    assert set(dags) == {"courier_positions_hourly", "courier_positions_maintenance"}
    assert reads == []


def test_the_variable_probe_catches_a_dag_that_reads_a_variable_at_import(monkeypatch, tmp_path):
    """The same probe on a copy of the hourly DAG that reads a setting at import (the
    mistake the test above guards against) sees the read."""
    for name in ("courier_common.py", "courier_positions_hourly.py"):
        (tmp_path / name).write_text((DAGS_DIR / name).read_text())
    (tmp_path / "sql").symlink_to(DAGS_DIR / "sql")
    dag_file = tmp_path / "courier_positions_hourly.py"
    dag_file.write_text(dag_file.read_text().replace(
        "\ncourier_positions_hourly()\n", "\nLOCAL = local_mode()\ncourier_positions_hourly()\n"))
    reads, dags = _variable_reads_while_parsing(monkeypatch, tmp_path)
    assert "courier_positions_hourly" in dags
    assert "courier_local_mode" in reads


def test_manifest_is_named_by_the_table_version():
    assert hourly.manifest_uri("s3://lake/manifests/", 42) == "s3://lake/manifests/v00000000000000000042.json"


@pytest.fixture
def clean_courier_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith(("COURIER_", "AIRFLOW_VAR_COURIER_", "AIRFLOW__COURIER__")):
            monkeypatch.delenv(k)
    return monkeypatch


def test_settings_lookup_order_variable_env_config_default(clean_courier_env):
    mp = clean_courier_env
    assert hourly.setting("table_uri") is None
    assert hourly.setting("compactor_container") == "compactor"  # SETTINGS default
    mp.setenv("AIRFLOW__COURIER__COMPACTOR_CONTAINER", "from-config")
    assert hourly.setting("compactor_container") == "from-config"
    mp.setenv("COURIER_COMPACTOR_CONTAINER", "from-env")
    assert hourly.setting("compactor_container") == "from-env"
    mp.setenv("AIRFLOW_VAR_COURIER_COMPACTOR_CONTAINER", "from-variable")
    assert hourly.setting("compactor_container") == "from-variable"


def test_mwaa_configuration_option_is_honoured(clean_courier_env):
    """Terraform sets "courier.table_uri" in airflow_configuration_options; MWAA exposes it
    as AIRFLOW__COURIER__TABLE_URI, i.e. conf.get("courier", "table_uri")."""
    clean_courier_env.setenv("AIRFLOW__COURIER__TABLE_URI", "s3://lake-from-mwaa/positions")
    clean_courier_env.setenv("AIRFLOW__COURIER__LOCAL_MODE", "true")
    assert hourly.setting("table_uri") == "s3://lake-from-mwaa/positions"
    assert hourly.local_mode() is True


def test_ecs_settings_come_from_the_terraform_keys(clean_courier_env):
    mp = clean_courier_env
    for key, value in {
        "ECS_CLUSTER": "arn:aws:ecs:eu-west-1:1:cluster/courier-dev",
        "COMPACTOR_TASK_DEFINITION": "courier-dev-compactor",
        "COMPACTOR_SUBNETS": "subnet-a, subnet-b",
        "COMPACTOR_SECURITY_GROUP": "sg-1",
        "COMPACTOR_LOG_GROUP": "/ecs/courier-dev/compactor",
    }.items():
        mp.setenv(f"AIRFLOW__COURIER__{key}", value)
    got = courier_common.ecs_settings()
    assert got["task_definition"] == "courier-dev-compactor"
    assert got["network_configuration"]["awsvpcConfiguration"] == {
        "subnets": ["subnet-a", "subnet-b"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}
    # The compactor module's awslogs-stream-prefix is the container name: <prefix>/<container>/<task id>.
    assert got["awslogs_stream_prefix"] == "compactor/compactor"
    mp.delenv("AIRFLOW__COURIER__COMPACTOR_SUBNETS")
    with pytest.raises(ValueError, match="compactor_subnets"):
        courier_common.ecs_settings()


TERRAFORM_FILES = [
    REPO_ROOT / "terraform" / "modules" / "orchestration" / "main.tf",
    *sorted((REPO_ROOT / "terraform" / "envs").glob("*/main.tf")),
]


def test_every_courier_key_terraform_sets_is_a_setting_the_dags_read():
    keys = {}
    for path in TERRAFORM_FILES:
        for key in re.findall(r'"courier\.([A-Za-z0-9_]+)"', path.read_text()):
            keys.setdefault(key, []).append(str(path.relative_to(REPO_ROOT)))
    assert keys, "no courier.<key> found in Terraform"
    unknown = {k: v for k, v in keys.items() if k not in courier_common.SETTINGS}
    assert unknown == {}
    # ... and the DAG code reads each of them by name.
    code = "\n".join(p.read_text() for p in DAGS_DIR.glob("*.py"))
    unread = [k for k in keys if not re.search(rf"setting\(\s*[\"']{k}[\"']", code)]
    assert unread == []


def test_run_list_becomes_an_ordered_load_plan():
    def run(v, rows, files=1):
        return {"table_version": v, "run": v, "checkpoints": {}, "files_added": files,
                "report": {"rows_written": rows, "records_read": 1, "positions_decoded": rows + 1,
                           "duplicates_dropped": 1, "dead_lettered": 0},
                "manifest": f"/t/_manifests/v{v:020d}.json" if files else None}  # fmt: skip

    plan = hourly.plan_load(json.dumps([run(5, 3), run(4, 2), run(6, 0, files=0)]), 3)
    assert [r["table_version"] for r in plan["runs"]] == [4, 5, 6]
    assert plan["rows_written"] == 5 and plan["table_version"] == 6 and plan["after_version"] == 3
    assert plan["runs"][2]["manifest"] is None
    assert plan["runs"][0] | {"manifest": None} == {
        "table_version": 4, "run": 4, "records_read": 1, "positions_decoded": 3, "duplicates_dropped": 1,
        "dead_lettered": 0, "rows_written": 2, "files_added": 1, "manifest": None, "dead_letter_file": None,
        "dead_letter_reasons": None}
    with pytest.raises(ValueError, match="report.duplicates_dropped"):
        hourly.plan_load([{**run(4, 1), "report": {"rows_written": 1}}], 3)
    assert hourly.plan_load("[]", 7) == {"after_version": 7, "table_version": 7, "runs": [], "rows_written": 0}
    with pytest.raises(ValueError, match="not after the loaded version"):
        hourly.plan_load([run(3, 1)], 3)
    with pytest.raises(ValueError, match="names no manifest"):
        hourly.plan_load([{**run(4, 1), "manifest": None}], 3)
    with pytest.raises(ValueError, match="not under s3://lake/manifests"):
        hourly.plan_load([run(4, 1)], 3, manifest_prefix="s3://lake/manifests/")
    assert hourly.plan_load([run(4, 1)], 3, manifest_prefix="/t/_manifests")["rows_written"] == 1
    with pytest.raises(ValueError, match="twice"):
        hourly.plan_load([run(4, 1), run(4, 1)], 3)
    with pytest.raises(ValueError, match="not a JSON list|did not print"):
        hourly.plan_load("{}", 3)
    # This hour's committed run must be in the list; an empty run need not be.
    report = {"run": 9, "committed": True, "rows_written": 2, "files_added": 1, "table_version": 9,
              "manifest": "/t/_manifests/v00000000000000000009.json"}  # fmt: skip
    with pytest.raises(ValueError, match="lists only"):
        hourly.plan_load([run(4, 1)], 3, json.dumps(report))
    assert hourly.plan_load([run(9, 2)], 3, json.dumps(report))["rows_written"] == 2
    with pytest.raises(ValueError, match="run report says 2 rows, compactor runs says 3"):
        hourly.plan_load([run(9, 3)], 3, json.dumps(report))
    idle = {**report, "committed": False, "rows_written": 0, "files_added": 0, "manifest": None, "table_version": 3}
    assert hourly.plan_load([], 3, idle)["runs"] == []
    # Backlog rounds: every committed round must be listed.
    second = {**report, "run": 10, "table_version": 10, "rows_written": 4}
    with pytest.raises(ValueError, match="committed table version 10"):
        hourly.plan_load([run(9, 2)], 3, [report, second])
    assert hourly.plan_load([run(9, 2), run(10, 4)], 3, [report, second])["rows_written"] == 6


def test_run_report_is_validated():
    good = {"run": 3, "committed": True, "rows_written": 5, "files_added": 1, "table_version": 4,
            "manifest": "/t/_manifests/v00000000000000000004.json"}  # fmt: skip
    assert hourly.parse_report(json.dumps(good)) == good
    assert hourly.parse_report({**good, "rows_written": 0, "files_added": 0, "manifest": None})["run"] == 3
    with pytest.raises(ValueError, match="lacks"):
        hourly.parse_report({k: v for k, v in good.items() if k != "table_version"})
    with pytest.raises(ValueError, match="no manifest"):
        hourly.parse_report({**good, "manifest": None})


# --- the deployed Airflow version ----------------------------------------------------------------


def _terraform_airflow_version() -> str:
    text = "\n".join(p.read_text() for p in (REPO_ROOT / "terraform" / "modules" / "orchestration").glob("*.tf"))
    block = re.search(r'variable "airflow_version" \{(.*?)\n\}', text, re.S)
    assert block, "terraform/modules/orchestration declares no airflow_version"
    return re.search(r'default\s*=\s*"([0-9.]+)"', block.group(1)).group(1)


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower()] = m.group(2)
    return pins


def test_the_deployed_airflow_version_is_the_one_under_test_with_mwaas_providers():
    import os

    deployed = _terraform_airflow_version()
    # scripts/test-airflow.sh read the same default and tests this version.
    assert os.environ.get("COURIER_DEPLOYED_AIRFLOW_VERSION") == deployed
    requirements = DAGS_DIR / f"requirements-airflow-{deployed}.txt"
    assert requirements.exists(), f"Terraform deploys Airflow {deployed}: pin its MWAA requirements in {requirements.name}"
    pins = _pins(requirements)
    assert pins["apache-airflow"] == deployed
    constraints_line = [line for line in requirements.read_text().splitlines() if line.startswith("-c ")]
    assert constraints_line == [f"-c constraints-airflow-{deployed}.txt"]
    constraints = _pins(DAGS_DIR / f"constraints-airflow-{deployed}.txt")
    # Every Airflow package (and pyarrow) is pinned to exactly what MWAA installs.
    for name, version in pins.items():
        if name.startswith("apache-airflow-providers") or name in ("pyarrow", "apache-airflow-task-sdk"):
            assert constraints.get(name, version) == version, name
    for provider in ("amazon", "postgres", "common-sql", "standard"):
        assert pins[f"apache-airflow-providers-{provider}"] == constraints[f"apache-airflow-providers-{provider}"]


def test_the_installed_packages_are_the_pinned_ones():
    import os
    from importlib.metadata import version

    wanted = os.environ["COURIER_TEST_AIRFLOW_VERSION"]
    pins = _pins(DAGS_DIR / f"requirements-airflow-{wanted}.txt")
    for name in ("apache-airflow", "apache-airflow-providers-amazon", "apache-airflow-providers-postgres",
                 "apache-airflow-providers-common-sql"):  # fmt: skip
        assert version(name) == pins[name], name


# --- reports, reconciliation, lateness, freshness ------------------------------------------------


def test_report_uris_are_unique_per_run_task_try_and_round_and_the_last_try_wins(clean_courier_env, tmp_path):
    clean_courier_env.setenv("COURIER_LOCAL_MODE", "true")
    clean_courier_env.setenv("COURIER_REPORTS_URI", str(tmp_path / "reports"))
    a = courier_common.report_uri("d", "manual__2026-12-01T10:00:00+00:00", "compact_local", 1, 0)
    uris = {a, courier_common.report_uri("d", "manual__2026-12-01T10:00:00+00:00", "compact_local", 2, 0),
            courier_common.report_uri("d", "manual__2026-12-01T10:00:00+00:00", "compact_local", 1, 1),
            courier_common.report_uri("d", "scheduled__2026-12-01T10:00:00+00:00", "compact_local", 1, 0)}  # fmt: skip
    assert len(uris) == 4 and all(u.startswith(str(tmp_path / "reports") + "/d/") for u in uris)
    assert ":" not in a.removeprefix(str(tmp_path)) and "+" not in a
    assert courier_common.latest_report("d", "manual__2026-12-01T10:00:00+00:00", "compact_local") is None
    for try_number, value in ((1, "first"), (2, "second")):
        uri = courier_common.report_uri("d", "manual__2026-12-01T10:00:00+00:00", "compact_local", try_number)
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_text(json.dumps({"try": value}))
    assert courier_common.latest_report("d", "manual__2026-12-01T10:00:00+00:00", "compact_local") == {"try": "second"}
    with pytest.raises(FileNotFoundError, match="no report"):
        courier_common.read_report(str(tmp_path / "absent.json"))
    # Without a table or reports location the DAG refuses to guess.
    clean_courier_env.delenv("COURIER_REPORTS_URI")
    clean_courier_env.setenv("COURIER_LOCAL_MODE", "false")
    with pytest.raises(ValueError, match="reports_uri"):
        courier_common.reports_base()
    clean_courier_env.setenv("COURIER_TABLE_URI", "s3://lake/positions")
    assert courier_common.reports_base() == "s3://lake/positions/_reports"


LEDGER_OK = {"table_version": 5, "compactor_run": 4, "records_read": 10, "positions_decoded": 50,
             "duplicates_dropped": 2, "dead_lettered": 1, "rows_written": 47, "rows_staged": 47,
             "rows_inserted": 45, "late_duplicates_skipped": 1, "batch_duplicates_skipped": 1}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"dead_lettered": 0, "positions_decoded": 49}, None),  # exact: no undecodable records
        ({"positions_decoded": 51}, "stream != lake + duplicates + dead letters: positions_decoded 51"),
        ({"positions_decoded": 48}, "stream != lake"),
        ({"rows_staged": 46, "rows_inserted": 44}, "lake != staged: rows_written 47, rows_staged 46"),
        ({"rows_inserted": 44}, "staged != inserted + skipped: rows_staged 47, rows_inserted 44"),
    ],
)
def test_every_hop_reconciles_or_the_numbers_are_named(change, message):
    broken = hourly.reconcile_ledger([LEDGER_OK, {**LEDGER_OK, **change, "table_version": 6}])
    if message is None:
        assert broken == []
    else:
        assert len(broken) == 1 and message in broken[0] and "table version 6" in broken[0]


def test_only_scheduled_runs_can_be_late():
    from datetime import datetime, timedelta

    end, limit = datetime(2026, 12, 1, 10), timedelta(minutes=90)
    assert hourly.late_by("scheduled", end, end + timedelta(minutes=89), limit) is None
    assert hourly.late_by("scheduled", end, end + timedelta(minutes=91), limit) == timedelta(minutes=91)
    assert hourly.late_by("manual", end, end + timedelta(days=3), limit) is None
    assert hourly.late_by("backfill", end, end + timedelta(days=3), limit) is None


def test_freshness_is_lag_based_and_holds_on_a_quiet_night_and_an_empty_table():
    from datetime import datetime, timedelta

    now, limit = datetime(2026, 12, 1, 4), timedelta(hours=3)
    assert hourly.freshness_verdict(False, None, now, limit)[0]  # empty warehouse, nothing to load
    assert hourly.freshness_verdict(False, now - timedelta(hours=9), now, limit)[0]  # quiet night
    assert hourly.freshness_verdict(True, now - timedelta(hours=1), now, limit)[0]
    ok, why = hourly.freshness_verdict(True, now - timedelta(hours=4), now, limit)
    assert not ok and "backlog" in why and "4:00:00" in why
    assert not hourly.freshness_verdict(True, None, now, limit)[0]


def test_an_alert_names_the_dag_the_task_the_run_and_a_log_link(clean_courier_env):
    from types import SimpleNamespace

    clean_courier_env.setenv("COURIER_ENVIRONMENT", "prod")
    ti = SimpleNamespace(dag_id="courier_positions_hourly", run_id="scheduled__2026-12-01T10:00:00+00:00",
                         task_id="load_positions", try_number=3)  # fmt: skip
    subject, message = courier_common.alert_message({"ti": ti, "exception": ValueError("boom")}, "task failed")
    assert subject == "[courier prod] courier_positions_hourly task failed"
    for part in ("DAG courier_positions_hourly", "run scheduled__2026-12-01T10:00:00+00:00",
                 "task load_positions (try 3)", "error: boom",
                 "/dags/courier_positions_hourly/runs/scheduled__2026-12-01T10%3A00%3A00%2B00%3A00"
                 "/tasks/load_positions?try_number=3"):  # fmt: skip
        assert part in message, part


def test_dead_letters_warn_with_their_count_reasons_and_files(tmp_path):
    # A run of the current compactor carries its reasons; an older run's file is read.
    older = tmp_path / "run-1.jsonl"
    older.write_text(json.dumps({"kind": "invalid", "reasons": ["lat: must be between -90 and 90"]}) + "\n")
    runs = [
        {"dead_letter_file": "s3://lake/positions_dead_letter/run-2-a.jsonl",
         "dead_letter_reasons": {"undecodable record": 2, "lat: must be between -90 and 90": 1}},
        {"dead_letter_file": str(older), "dead_letter_reasons": None},
        {"dead_letter_file": None, "dead_letter_reasons": {}},
    ]  # fmt: skip
    message = hourly.dead_letter_warning(4, runs)
    assert message.startswith("4 positions or records dead-lettered; by reason: ")
    reasons = json.loads(message.split("by reason: ", 1)[1].split(" (files: ")[0])
    assert reasons == {"undecodable record": 2, "lat: must be between -90 and 90": 1,
                       "invalid: lat: must be between -90 and 90": 1}  # fmt: skip
    assert "s3://lake/positions_dead_letter/run-2-a.jsonl" in message and str(older) in message
    # The S3 file of a run with reasons is never read (it would fail here: no connection).
    assert "unreadable" not in message
