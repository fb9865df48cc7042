"""Run-time settings and the compactor report contract (no Airflow run needed)."""

from __future__ import annotations

import importlib
import json
import re

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


def test_importing_the_dag_reads_no_variable(monkeypatch):
    from airflow.sdk import Variable

    def boom(*_a, **_k):
        raise AssertionError("Variable read at import time")

    monkeypatch.setattr(Variable, "get", boom)
    importlib.reload(hourly)


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
                "report": {"rows_written": rows, "records_read": 1},
                "manifest": f"/t/_manifests/v{v:020d}.json" if files else None}  # fmt: skip

    plan = hourly.plan_load(json.dumps([run(5, 3), run(4, 2), run(6, 0, files=0)]), 3)
    assert [r["table_version"] for r in plan["runs"]] == [4, 5, 6]
    assert plan["rows_written"] == 5 and plan["table_version"] == 6 and plan["after_version"] == 3
    assert plan["runs"][2]["manifest"] is None
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


def test_run_report_is_validated():
    good = {"run": 3, "committed": True, "rows_written": 5, "files_added": 1, "table_version": 4,
            "manifest": "/t/_manifests/v00000000000000000004.json"}  # fmt: skip
    assert hourly.parse_report(json.dumps(good)) == good
    assert hourly.parse_report({**good, "rows_written": 0, "files_added": 0, "manifest": None})["run"] == 3
    with pytest.raises(ValueError, match="lacks"):
        hourly.parse_report({k: v for k, v in good.items() if k != "table_version"})
    with pytest.raises(ValueError, match="no manifest"):
        hourly.parse_report({**good, "manifest": None})
