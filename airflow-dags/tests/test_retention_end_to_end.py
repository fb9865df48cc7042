"""The retention policy end to end in local mode: the real ingest-api and compactor, the
hourly DAG loading positions of eight dates, then the maintenance DAG (dag.test()) enforcing
a short policy on every tier; a second run removes nothing. One run of each DAG, to keep
the suite's time (the fixtures and helpers are test_end_to_end.py's); on the deployed
Airflow only, like every dag.test() run not marked every_version (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time as clock
from collections import Counter
from datetime import datetime, time, timedelta, timezone

import psycopg
import pytest

import courier_common
from test_end_to_end import (  # noqa: F401 (local_env is a fixture)
    COMPACTOR,
    MAINTENANCE_DAG_ID,
    delta_rows_by_date,
    local_env,
    make_positions,
    parse_ts,
    run_dag,
    send,
    states,
    this_hour,
)

POLICY = {"LAKE": 4, "DEAD_LETTER": 2, "WAREHOUSE_RAW": 3, "GOLD": 5}
DAYS_BACK = range(1, 8)  # positions on each of the seven days before today


@pytest.fixture(autouse=True)
def _ingest_accepts_week_old_positions(monkeypatch):
    """ingest-api (started by local_env, after this) rejects positions older than 7 days by
    default; the oldest here are 7.5 days old."""
    monkeypatch.setenv("INGEST_MAX_AGE_SECS", str(10 * 24 * 3600))


def _warehouse(db) -> dict:
    with psycopg.connect(db) as conn:
        return {
            "positions": conn.execute("SELECT event_id, event_date FROM courier.positions ORDER BY 1").fetchall(),
            "daily": conn.execute("SELECT * FROM courier_gold.courier_daily ORDER BY 1, 2").fetchall(),
            "hourly": conn.execute("SELECT * FROM courier_gold.positions_hourly ORDER BY 1").fetchall(),
            "ledger": conn.execute("SELECT * FROM courier.load_ledger ORDER BY 1").fetchall(),
            "ledger_dates": conn.execute("SELECT * FROM courier.load_ledger_dates ORDER BY 1, 2").fetchall(),
        }


def _status(env) -> dict:
    out = subprocess.run([COMPACTOR, "status", "--data-dir", str(env["tmp"] / "stream"), "--stream-name",
                          "courier-positions", "--table-uri", str(env["table"])],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


def _xcoms(dag_run) -> dict:
    return {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in dag_run.get_task_instances()}


def test_the_maintenance_dag_removes_exactly_the_expired_rows_of_every_tier_and_a_rerun_nothing(
        dagbag, local_env, monkeypatch):  # noqa: F811
    for tier, days in POLICY.items():
        monkeypatch.setenv(f"COURIER_{tier}_RETENTION_DAYS", str(days))
    run_at = this_hour()
    today = run_at.date()
    cutoff = {tier: (today - timedelta(days=days)).isoformat() for tier, days in POLICY.items()}

    # Two couriers, three positions each, at noon (UTC) of each of the last seven days.
    acked = {}
    for k in DAYS_BACK:
        noon = datetime.combine(today - timedelta(days=k), time(12), tzinfo=timezone.utc)
        acked |= send(local_env["api"], make_positions(2, 3, noon, seed=40 + k))
    by_date = Counter(str(parse_ts(p["recorded_at"]).date()) for p in acked.values())
    assert sorted(by_date) == [str(today - timedelta(days=k)) for k in reversed(DAYS_BACK)]
    hourly = run_dag(dagbag, run_at - timedelta(hours=1))
    assert hourly.state == "success", states(hourly)
    before = _warehouse(local_env["db"])
    assert len(before["positions"]) == len(acked)
    assert {str(r[0]) for r in before["daily"]} == set(by_date)

    # Dead letters (local mode: files under <table>_dead_letter): one older than its
    # retention, one younger.
    dead = local_env["table"].parent / f"{local_env['table'].name}_dead_letter"
    dead.mkdir(exist_ok=True)
    old_file, new_file = dead / "run-00000000000000000001-old.jsonl", dead / "run-00000000000000000002-new.jsonl"
    for f, age_days in ((old_file, POLICY["DEAD_LETTER"] + 1), (new_file, 0)):
        f.write_text(json.dumps({"kind": "invalid", "reasons": ["lat: out of range"]}) + "\n")
        stamp = clock.time() - age_days * 86400 - 60
        os.utime(f, (stamp, stamp))
    status_before = _status(local_env)

    maintenance = dagbag.dags[MAINTENANCE_DAG_ID].test(logical_date=run_at)
    assert maintenance.state == "success", states(maintenance)
    got = states(maintenance)
    assert got["retention_local"] == got["retention_warehouse"] == got["reconcile_lake_and_warehouse"] == "success"
    assert got["retention_ecs"] == "skipped"
    xcom = _xcoms(maintenance)
    policy = xcom["retention_policy"]
    assert (policy["lake_cutoff"], policy["warehouse_raw_cutoff"], policy["gold_cutoff"]) == (
        cutoff["LAKE"], cutoff["WAREHOUSE_RAW"], cutoff["GOLD"])

    # The lake: exactly the partitions before the lake cutoff are gone, in one commit.
    expired_lake = {d: n for d, n in by_date.items() if d < cutoff["LAKE"]}
    report = xcom["retention_local"]
    assert report["cutoff_date"] == cutoff["LAKE"]
    assert sorted(str(p).rpartition("=")[2] for p in report["partitions_removed"]) == sorted(expired_lake)
    assert report["rows_removed"] == sum(expired_lake.values())
    kept_lake = {d: n for d, n in by_date.items() if d >= cutoff["LAKE"]}
    assert delta_rows_by_date(local_env["table"]) == kept_lake  # read back by polars' Delta reader
    status = _status(local_env)
    assert status["rows"] == sum(kept_lake.values())
    # retention, then optimize (the files of each kept date were written by one run: nothing to pack)
    assert status["table_version"] == status_before["table_version"] + 1
    assert courier_common.lake_rows_by_date(str(local_env["table"]), status["table_version"]) == kept_lake

    # Dead letters: the old file is gone, the young one kept.
    assert not old_file.exists() and new_file.exists()

    # The warehouse: raw positions from the raw cutoff on, gold rows from the gold cutoff on,
    # the rest untouched; the ledgers are kept.
    after = _warehouse(local_env["db"])
    assert after["positions"] == [r for r in before["positions"] if str(r[1]) >= cutoff["WAREHOUSE_RAW"]]
    assert sorted(str(d) for _, d in after["positions"]) == sorted(
        d for d, n in by_date.items() if d >= cutoff["WAREHOUSE_RAW"] for _ in range(n))
    assert after["daily"] == [r for r in before["daily"] if str(r[0]) >= cutoff["GOLD"]]
    assert after["hourly"] == [r for r in before["hourly"] if str(r[1]) >= cutoff["GOLD"]]
    assert after["daily"] and len(after["daily"]) < len(before["daily"])
    assert (after["ledger"], after["ledger_dates"]) == (before["ledger"], before["ledger_dates"])
    deleted = xcom["retention_warehouse"]["rows_deleted"]
    assert deleted == {
        "courier.positions": len(before["positions"]) - len(after["positions"]),
        "courier_gold.courier_daily": len(before["daily"]) - len(after["daily"]),
        "courier_gold.positions_hourly": len(before["hourly"]) - len(after["hourly"]),
    }
    assert deleted["courier.positions"] > 0

    # The daily check compared the dates inside both windows, and they agree.
    check = xcom["reconcile_lake_and_warehouse"]
    assert check["compare_from"] == max(cutoff["LAKE"], cutoff["WAREHOUSE_RAW"])
    assert sorted(check["lake"]) == sorted(d for d in by_date if d >= check["compare_from"])

    # A second run removes nothing and changes nothing.
    again = dagbag.dags[MAINTENANCE_DAG_ID].test(logical_date=run_at + timedelta(minutes=30))
    assert again.state == "success", states(again)
    xcom = _xcoms(again)
    assert xcom["retention_local"]["partitions_removed"] == [] and xcom["retention_local"]["rows_removed"] == 0
    assert set(xcom["retention_warehouse"]["rows_deleted"].values()) == {0}
    assert _status(local_env)["table_version"] == status["table_version"]
    assert _warehouse(local_env["db"]) == after
    assert new_file.exists()
