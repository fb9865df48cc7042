"""Run-time settings and the compactor report contract (no Airflow run needed)."""

from __future__ import annotations

import importlib
import json

import pytest

import courier_positions_hourly as hourly


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
    assert hourly.manifest_uri("s3://lake/positions/", 42) == "s3://lake/positions/_manifests/v00000000000000000042.json"


def test_run_report_is_validated():
    good = {"run": 3, "committed": True, "rows_written": 5, "files_added": 1, "table_version": 4,
            "manifest": "/t/_manifests/v00000000000000000004.json"}  # fmt: skip
    assert hourly.parse_report(json.dumps(good)) == good
    assert hourly.parse_report({**good, "rows_written": 0, "files_added": 0, "manifest": None})["run"] == 3
    with pytest.raises(ValueError, match="lacks"):
        hourly.parse_report({k: v for k, v in good.items() if k != "table_version"})
    with pytest.raises(ValueError, match="no manifest"):
        hourly.parse_report({**good, "manifest": None})
