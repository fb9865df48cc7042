"""The retention policy: settings, cutoffs and the compactor report check (no Airflow run),
the maintenance DAG's retention tasks, and sql/retention_warehouse.sql parsed as Redshift
and run on PostgreSQL. The end-to-end run is tests/test_retention_end_to_end.py."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
import sqlparse

import courier_common
import courier_positions_maintenance as maintenance
from conftest import SQL_DIR
from test_sql import migrate, parses, render, row, run_file, stage

MAINTENANCE = "courier_positions_maintenance"
TIERS = ("lake", "dead_letter", "warehouse_raw", "gold")


@pytest.fixture
def clean_courier_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith(("COURIER_", "AIRFLOW_VAR_COURIER_", "AIRFLOW__COURIER__")):
            monkeypatch.delenv(k)
    return monkeypatch


def test_the_policy_cuts_every_tier_at_today_minus_its_days_from_the_terraform_settings(clean_courier_env):
    """AWS mode: the days come from the `courier.<tier>_retention_days` options Terraform sets
    (AIRFLOW__COURIER__...); a policy of N days keeps today and the N days before it."""
    for tier, days in zip(TIERS, (30, 14, 21, 400)):
        clean_courier_env.setenv(f"AIRFLOW__COURIER__{tier.upper()}_RETENTION_DAYS", str(days))
    policy = courier_common.retention_policy(datetime(2026, 12, 2, 3, 30, tzinfo=timezone.utc))
    assert policy == {
        "now": "2026-12-02T03:30:00Z", "today": "2026-12-02",
        "lake_retention_days": 30, "lake_cutoff": "2026-11-02",
        "dead_letter_retention_days": 14, "dead_letter_cutoff": "2026-11-18",
        "warehouse_raw_retention_days": 21, "warehouse_raw_cutoff": "2026-11-11",
        "gold_retention_days": 400, "gold_cutoff": "2025-10-28",
        "compare_from": "2026-11-11",  # inside both the lake's and the raw window
    }  # fmt: skip
    # A Variable wins over the Terraform option, as for every setting; the day is the UTC one.
    clean_courier_env.setenv("AIRFLOW_VAR_COURIER_LAKE_RETENTION_DAYS", "7")
    policy = courier_common.retention_policy(datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-3))))
    assert (policy["today"], policy["lake_cutoff"], policy["compare_from"]) == ("2026-12-02", "2026-11-25", "2026-11-25")


def test_aws_mode_never_deletes_by_a_default_and_bad_values_are_named(clean_courier_env):
    for tier in TIERS[1:]:
        clean_courier_env.setenv(f"AIRFLOW__COURIER__{tier.upper()}_RETENTION_DAYS", "30")
    now = datetime(2026, 12, 2, 3, 30, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match=r"no lake_retention_days setting: AWS mode never deletes by a default.*tfvars"):
        courier_common.retention_policy(now)
    for bad, message in (("0", "at least 1 day"), ("7.5", "whole number of days"), ("-3", "at least 1 day")):
        clean_courier_env.setenv("AIRFLOW__COURIER__LAKE_RETENTION_DAYS", bad)
        with pytest.raises(ValueError, match=f"lake_retention_days must be .*{message}"):
            courier_common.retention_policy(now)
    # Local mode: the documented defaults (the dev environment's policy).
    clean_courier_env.delenv("AIRFLOW__COURIER__LAKE_RETENTION_DAYS")
    for tier in TIERS[1:]:
        clean_courier_env.delenv(f"AIRFLOW__COURIER__{tier.upper()}_RETENTION_DAYS")
    clean_courier_env.setenv("COURIER_LOCAL_MODE", "true")
    policy = courier_common.retention_policy(now)
    assert [policy[f"{t}_retention_days"] for t in TIERS] == [30, 14, 30, 90]
    assert courier_common.RETENTION_LOCAL_DEFAULTS == {"lake": 30, "dead_letter": 14, "warehouse_raw": 30, "gold": 90}


def test_the_compactor_report_must_cut_where_the_policy_does(clean_courier_env):
    clean_courier_env.setenv("COURIER_LOCAL_MODE", "true")
    policy = courier_common.retention_policy(datetime(2026, 12, 2, 3, 30, tzinfo=timezone.utc))
    report = {"cutoff_date": "2026-11-02", "partitions_removed": ["event_date=2026-10-30", "event_date=2026-11-01"],
              "files_removed": 3, "rows_removed": 40, "table_version": 9}  # fmt: skip
    assert courier_common.check_retention_report(report, policy) is report
    nothing = {"cutoff_date": "2026-11-02", "partitions_removed": [], "files_removed": 0, "rows_removed": 0,
               "table_version": None}  # fmt: skip
    assert courier_common.check_retention_report(nothing, policy) is nothing
    with pytest.raises(ValueError, match="cut the lake at 2026-11-03, the DAG run's policy at 2026-11-02"):
        courier_common.check_retention_report({**report, "cutoff_date": "2026-11-03"}, policy)
    with pytest.raises(ValueError, match="removed partitions inside the window"):
        courier_common.check_retention_report({**report, "partitions_removed": ["event_date=2026-11-02"]}, policy)
    with pytest.raises(ValueError, match="lacks"):
        courier_common.check_retention_report({"cutoff_date": "2026-11-02"}, policy)


def test_the_retention_tasks_of_the_maintenance_dag(dagbag):
    """One policy task feeds every tier and the daily check; the lake is cut before optimize
    and vacuum; the warehouse's deletes come before its VACUUM, which runs whatever their
    outcome."""
    dag = dagbag.dags[MAINTENANCE]
    assert dag.get_task("retention_policy").downstream_task_ids == {
        "retention_local", "retention_ecs", "retention_warehouse", "reconcile_lake_and_warehouse"}
    assert dag.get_task("retention_ecs").downstream_task_ids == {"optimize_ecs"}
    assert dag.get_task("retention_local").downstream_task_ids == {"optimize_local"}
    assert dag.get_task("vacuum_analyze").upstream_task_ids == {"retention_warehouse"}
    assert str(dag.get_task("vacuum_analyze").trigger_rule).rpartition(".")[2].lower() == "all_done"
    for task_id in ("retention_policy", "retention_ecs", "retention_local", "retention_warehouse"):
        assert task_id in dag.doc_md


def test_the_warehouse_retention_sql_parses_as_redshift_with_the_cutoffs():
    sql = render(SQL_DIR / "retention_warehouse.sql", raw_cutoff="2026-11-11", gold_cutoff="2025-10-28")
    assert parses(sql, "redshift") and parses(sql, "postgres")
    policy = {"warehouse_raw_cutoff": "2026-11-11", "gold_cutoff": "2025-10-28"}
    statements = maintenance.warehouse_retention_statements(policy)
    assert [t for t, _ in statements] == ["courier.positions", "courier_gold.courier_daily",
                                          "courier_gold.positions_hourly"]  # fmt: skip
    flat = [" ".join(sqlparse.format(s, strip_comments=True).split()) for _, s in statements]
    assert "event_date < CAST('2026-11-11' AS DATE) AND recorded_at < CAST('2026-11-11' AS TIMESTAMP)" in flat[0]
    assert all("event_date < CAST('2025-10-28' AS DATE)" in f for f in flat[1:])
    # Never the ledgers (the high-water mark) nor anything but a DELETE.
    assert all(f.startswith("DELETE FROM ") for f in flat)
    assert not any("load_ledger" in f for f in flat)


def _counts(conn) -> dict[str, list]:
    return {
        "positions": conn.execute("SELECT event_date, COUNT(*) FROM courier.positions GROUP BY 1 ORDER BY 1").fetchall(),
        "daily": conn.execute("SELECT event_date, COUNT(*) FROM courier_gold.courier_daily GROUP BY 1 ORDER BY 1").fetchall(),
        "hourly": conn.execute("SELECT event_date, COUNT(*) FROM courier_gold.positions_hourly GROUP BY 1 ORDER BY 1").fetchall(),
        "ledger": conn.execute("SELECT * FROM courier.load_ledger ORDER BY 1").fetchall(),
        "ledger_dates": conn.execute("SELECT * FROM courier.load_ledger_dates ORDER BY 1, 2").fetchall(),
    }


def test_the_warehouse_retention_deletes_exactly_the_expired_rows_once_on_postgres(pg_database):
    """Positions on six dates, loaded and refreshed into gold as the hourly DAG does; the
    retention deletes the raw rows before the raw cutoff and the gold rows before the gold
    cutoff, keeps the ledgers, and a second run deletes nothing. The daily check's
    warehouse side then compares only the dates inside both windows."""
    d = [date(2026, 11, 20) + timedelta(days=i) for i in range(6)]  # 11-20 .. 11-25
    rows = [row(f"e{i}{k}", f"c{k}", -23.5, -46.6, datetime.combine(day, datetime.min.time()) + timedelta(hours=10 + k))
            for i, day in enumerate(d) for k in range(2)]  # fmt: skip
    policy = {"warehouse_raw_cutoff": "2026-11-23", "gold_cutoff": "2026-11-21", "compare_from": "2026-11-23"}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, {5: rows})
        run_file(conn, SQL_DIR / "load_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        before = _counts(conn)
        assert before["positions"] == [(day, 2) for day in d] and before["daily"] == [(day, 2) for day in d]
    with psycopg.connect(pg_database) as conn:
        deleted = maintenance.delete_expired_warehouse_rows(conn, policy)
    assert deleted == {"courier.positions": 6, "courier_gold.courier_daily": 2, "courier_gold.positions_hourly": 2}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        after = _counts(conn)
        assert after["positions"] == [(day, 2) for day in d[3:]]  # from the raw cutoff 11-23 on
        assert after["daily"] == [(day, 2) for day in d[1:]] and after["hourly"] == [(day, 2) for day in d[1:]]
        assert after["ledger"] == before["ledger"] and after["ledger_dates"] == before["ledger_dates"]
        counts = conn.execute(render(SQL_DIR / "checks" / "lake_warehouse_counts.sql")).fetchall()
    with psycopg.connect(pg_database) as conn:
        assert maintenance.delete_expired_warehouse_rows(conn, policy) == {
            "courier.positions": 0, "courier_gold.courier_daily": 0, "courier_gold.positions_hourly": 0}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert _counts(conn) == after

    # The daily check: the lake keeps 11-22 on (lake cutoff 11-22), the warehouse 11-23 on.
    # Unfiltered, the dates retention removed from one side are "broken"; inside both windows
    # every date reconciles.
    lake = {str(day): 2 for day in d[2:]}
    warehouse = {str(day): {"fact_rows": int(f), "rows_staged": int(s), "rows_inserted": int(i),
                            "duplicates_skipped": int(k)} for _, day, f, s, i, k in counts}  # fmt: skip
    assert courier_common.lake_warehouse_mismatches(lake, warehouse, 5) != []
    kept_lake, kept_warehouse = maintenance.within_retention(lake, warehouse, policy["compare_from"])
    assert sorted(kept_lake) == sorted(kept_warehouse) == [str(day) for day in d[3:]]
    assert courier_common.lake_warehouse_mismatches(kept_lake, kept_warehouse, 5) == []
    # A row lost inside the windows is still caught.
    kept_lake["2026-11-24"] = 3
    assert courier_common.lake_warehouse_mismatches(kept_lake, kept_warehouse, 5) == [
        "event_date 2026-11-24: lake 3 rows (table version 5) != warehouse 2 rows in courier.positions"
        " + 0 duplicates skipped"]
