"""Warehouse reload from the lake for a date range (courier_reload DAG): its SQL in both
dialects and against PostgreSQL, the DAG's structure, and end to end in local mode."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

import jinja2
import psycopg
import pytest
import sqlfluff

from conftest import SQL_DIR

import courier_common
import courier_positions_hourly as hourly
import courier_reload as reload
from test_sql import migrate, row, run_file, stage

FACT_COLUMNS = ("event_id, courier_id, lat, lon, recorded_at, received_at, accuracy_m, speed_mps, heading_deg,"
                " order_id, event_date")  # fmt: skip


def parses(sql: str, dialect: str) -> bool:
    try:
        sqlfluff.parse(sql, dialect=dialect)
    except sqlfluff.api.APIParsingError:
        return False
    return True


@pytest.mark.parametrize("dialect", ["redshift", "postgres"])
def test_the_reload_parses_in_both_dialects(dialect):
    sql = reload.render_reload_sql("manual__x'; --", [date(2026, 11, 24), date(2026, 11, 25)], 9, 3)
    assert parses(sql, dialect)
    copy = jinja2.Template((SQL_DIR / "reload_copy_staging.sql").read_text()).render(
        run_id="manual__r", table_version=9, manifest="s3://lake/_reports/reload-manifests/r.json",
        iam_role="arn:aws:iam::123456789012:role/copy")  # fmt: skip
    if dialect == "redshift":
        assert parses(copy, dialect) and "FORMAT AS PARQUET" in copy and "MANIFEST" in copy


def test_the_reload_reads_the_compactors_parquet_columns():
    assert reload.PARQUET_COLUMNS == hourly.PARQUET_COLUMNS


def test_date_ranges_are_validated():
    assert reload.date_range({"start_date": "2026-11-24", "end_date": "2026-11-26"}) == [
        date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]  # fmt: skip
    for bad in ({}, {"start_date": "2026-11-24"}, {"start_date": "2026-11-25", "end_date": "2026-11-24"},
                {"start_date": "2024-01-01", "end_date": "2026-01-01"}, {"start_date": "x", "end_date": "y"}):  # fmt: skip
        with pytest.raises(ValueError):
            reload.date_range(bad)


def test_a_manifest_names_each_file_with_its_size():
    m = reload.manifest_of("s3://lake/positions", [{"path": "event_date=2026-11-24/part%20a.parquet", "size": 12}])
    assert m == {"entries": [{"url": "s3://lake/positions/event_date=2026-11-24/part a.parquet", "mandatory": True,
                              "meta": {"content_length": 12}}]}  # fmt: skip


def facts(conn):
    return conn.execute(f"SELECT {FACT_COLUMNS} FROM courier.positions ORDER BY event_id").fetchall()


def reload_dates(conn, lake_rows, dates, version, run_id="manual__reload"):
    """What reload_positions does: stage the lake's rows, then the statements in one transaction."""
    columns = ", ".join((*hourly.PARQUET_COLUMNS, "dag_run_id", "table_version"))
    conn.execute(reload.STAGING_CLEANUP, (run_id,))
    with conn.cursor().copy(f"COPY courier_staging.positions_staging ({columns}) FROM STDIN") as copy:
        for r in lake_rows:
            copy.write_row((*r, run_id, version))
    with conn.transaction():
        conn.execute("LOCK courier.load_ledger")
        for statement in courier_common.sql_statements(reload.render_reload_sql(run_id, dates, version, 2)):
            conn.execute(statement)


def test_the_reload_replaces_the_dates_rows_with_the_lakes_once_and_the_ledger_reconciles(pg_database):
    d1, d2, d3 = datetime(2026, 11, 23, 23, 10), datetime(2026, 11, 24, 0, 20), datetime(2026, 11, 25, 8)
    lake = {7: [row("a1", "c1", -23.5, -46.6, d1, 3.0), row("a2", "c1", -23.51, -46.6, d1 + timedelta(minutes=2)),
                row("b1", "c2", -23.5, -46.7, d2), row("z1", "c3", -23.5, -46.7, d3)],
            8: [row("a1", "c1", -23.5, -46.6, d1, 3.0), row("b2", "c2", -23.5, -46.71, d2 + timedelta(minutes=3))]}  # fmt: skip
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, lake)
        run_file(conn, SQL_DIR / "load_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        good = facts(conn)
        # A bad deploy: a row lost, one changed, one invented, on the first two dates.
        conn.execute("DELETE FROM courier.positions WHERE event_id = 'a2'")
        conn.execute("UPDATE courier.positions SET lat = 0 WHERE event_id = 'b1'")
        conn.execute("INSERT INTO courier.positions (event_id, courier_id, lat, lon, recorded_at, received_at,"
                     " event_date, table_version) VALUES ('x1', 'c9', 1, 2, %s, %s, %s, 8)", (d2, d2, d2.date()))  # fmt: skip
        untouched = conn.execute("SELECT * FROM courier.positions WHERE event_date = %s", (d3.date(),)).fetchall()
        in_range = [r for rows in lake.values() for r in rows if r[4].date() <= d2.date()]
        dates = [d1.date(), d2.date()]
        reload_dates(conn, in_range, dates, 8)
        first = facts(conn)
        assert [r[:10] for r in first] == [r[:10] for r in good] and first == good
        assert conn.execute("SELECT * FROM courier.positions WHERE event_date = %s", (d3.date(),)).fetchall() == untouched
        assert conn.execute("SELECT table_version, files_read, rows_staged, rows_inserted, duplicates_skipped"
                            " FROM courier.reloads").fetchall() == [(8, 2, 5, 4, 1)]  # fmt: skip
        assert conn.execute("SELECT event_date FROM courier_staging.gold_dirty_dates ORDER BY 1").fetchall() == [
            (d1.date(),), (d2.date(),)]  # fmt: skip
        assert conn.execute("SELECT COUNT(*) FROM courier_staging.positions_staging WHERE dag_run_id = 'manual__reload'"
                            ).fetchone() == (0,)  # fmt: skip
        # The daily check's identities hold on every date, against the lake's rows per date.
        in_lake = Counter(str(r[4].date()) for rows in lake.values() for r in rows)
        rows = conn.execute((SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text()).fetchall()
        warehouse = {str(d): {"fact_rows": f, "rows_staged": s, "rows_inserted": i, "duplicates_skipped": k}
                     for _, d, f, s, i, k in rows}  # fmt: skip
        assert courier_common.lake_warehouse_mismatches(dict(in_lake), warehouse, 8) == []
        # Twice: the same rows, the same ledger.
        ledger = conn.execute("SELECT table_version, event_date, rows_staged, rows_inserted, duplicates_skipped"
                              " FROM courier.load_ledger_dates ORDER BY 1, 2").fetchall()  # fmt: skip
        reload_dates(conn, in_range, dates, 8)
        assert facts(conn) == first
        assert conn.execute("SELECT table_version, event_date, rows_staged, rows_inserted, duplicates_skipped"
                            " FROM courier.load_ledger_dates ORDER BY 1, 2").fetchall() == ledger  # fmt: skip
        assert conn.execute("SELECT COUNT(*) FROM courier.reloads").fetchone() == (1,)


def test_the_reload_dag_is_triggered_only_bounded_alerting_and_documented(dagbag):
    dag = dagbag.dags[reload.DAG_ID]
    assert dag.timetable.__class__.__name__ == "NullTimetable"
    assert set(dag.params.keys()) == {"start_date", "end_date"}
    assert dag.dagrun_timeout and dag.doc_md and "reload" in dag.tags
    order = ["migrate_warehouse", "reload_positions", "refresh_gold", "check_reloaded_dates"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for before, after in zip(order, order[1:]):
        assert dag.get_task(after).upstream_task_ids == {before}
    for t in dag.tasks:
        assert t.execution_timeout and t.on_failure_callback, t.task_id


# --- end to end: the real ingest-api and compactor, dag.test() in local mode ---------------------

from datetime import timezone  # noqa: E402

from test_end_to_end import local_env, make_positions, run_dag, send, states, this_hour  # noqa: E402,F401


def test_the_reload_dag_restores_a_date_range_from_the_lake_twice_alike_and_the_daily_check_passes(
        dagbag, local_env, monkeypatch):  # fmt: skip
    import courier_positions_maintenance as maintenance

    monkeypatch.setenv("COMPACTOR_DEDUP_COMMITS", "1")  # a late duplicate reaches the lake (the load skips it)
    now = datetime.now(timezone.utc)
    first = make_positions(3, 8, now - timedelta(hours=50), seed=41)
    send(local_env["api"], first)
    send(local_env["api"], make_positions(3, 8, now - timedelta(hours=26), seed=42))
    hourly_run = run_dag(dagbag, this_hour() - timedelta(hours=2))
    assert hourly_run.state == "success", states(hourly_run)
    send(local_env["api"], make_positions(2, 5, now - timedelta(hours=2), seed=43))
    hourly_run = run_dag(dagbag, this_hour() - timedelta(hours=1))
    local_env["api"].post(first[:5])  # the same event ids again, past the dedup window: late duplicates
    hourly_run = run_dag(dagbag, this_hour())
    assert hourly_run.state == "success", states(hourly_run)
    with psycopg.connect(local_env["db"], autocommit=True) as conn:
        good = facts(conn)
        dates = sorted({r[10] for r in good})
        assert len(dates) >= 3
        start, end = dates[0], dates[-2]
        # A bad deploy on the reloaded dates: rows lost and changed; the last date is left alone.
        conn.execute("DELETE FROM courier.positions WHERE event_id IN (SELECT event_id FROM courier.positions"
                     " WHERE event_date = %s ORDER BY event_id LIMIT 3)", (start,))  # fmt: skip
        conn.execute("UPDATE courier.positions SET lat = 0 WHERE event_date = %s", (end,))
        outside = conn.execute("SELECT * FROM courier.positions WHERE event_date > %s ORDER BY event_id",
                               (end,)).fetchall()  # fmt: skip
    dag = dagbag.dags[reload.DAG_ID]
    conf = {"start_date": start.isoformat(), "end_date": end.isoformat()}
    once = dag.test(run_conf=conf)
    assert once.state == "success", states(once)
    with psycopg.connect(local_env["db"]) as conn:
        reloaded = facts(conn)
        assert reloaded == good
        assert conn.execute("SELECT * FROM courier.positions WHERE event_date > %s ORDER BY event_id",
                            (end,)).fetchall() == outside  # fmt: skip
        (record,) = conn.execute("SELECT rows_staged, rows_inserted, duplicates_skipped FROM courier.reloads").fetchall()
        assert record[0] == record[1] + record[2] and record[2] >= 5
        gold = conn.execute("SELECT event_date, courier_id, positions FROM courier_gold.courier_daily ORDER BY 1, 2").fetchall()
    twice = dag.test(run_conf=conf)
    assert twice.state == "success", states(twice)
    with psycopg.connect(local_env["db"]) as conn:
        assert facts(conn) == reloaded
        assert conn.execute("SELECT event_date, courier_id, positions FROM courier_gold.courier_daily"
                            " ORDER BY 1, 2").fetchall() == gold  # fmt: skip
        rows = conn.execute((SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text()).fetchall()
    # The maintenance DAG's daily check, on every date.
    maintenance.compare_lake_and_warehouse(rows, str(local_env["table"]))
