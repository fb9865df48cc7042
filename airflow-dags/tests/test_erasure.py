"""Per-courier erasure (courier_erasure DAG): its SQL in both dialects and against
PostgreSQL, the DAG's structure, and end to end in local mode with the real binaries."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta

import psycopg
import pytest
import sqlfluff

from conftest import SQL_DIR

import courier_common
import courier_erasure as erasure
from test_sql import migrate, row, run_file, stage

REQUEST = "req-1"
ERASE_VERSION = 11


def parses(sql: str, dialect: str) -> bool:
    try:
        sqlfluff.parse(sql, dialect=dialect)
    except sqlfluff.api.APIParsingError:
        return False
    return True


@pytest.mark.parametrize("dialect", ["redshift", "postgres"])
@pytest.mark.parametrize("erase_version", [ERASE_VERSION, None])
def test_the_warehouse_erasure_parses_in_both_dialects(dialect, erase_version):
    sql = erasure.render_warehouse_sql("req-'x", "manual__x'; DROP TABLE courier.positions; --",
                                       [erase_version - 2, erase_version] if erase_version else [],
                                       {"2026-11-24": 3} if erase_version else {}, datetime(2026, 11, 25))  # fmt: skip
    assert parses(sql, dialect)
    assert sql.count("INSERT INTO courier.load_ledger (") == (2 if erase_version else 0)


def test_v005_declares_the_same_columns_and_comments_in_both_dialects():
    from test_sql import _columns

    name = "V005__erasure_and_reload.sql"
    redshift = _columns(SQL_DIR / "migrations" / name, "redshift")
    assert redshift == _columns(SQL_DIR / "postgres" / "migrations" / name, "postgres")
    assert set(redshift) == {"courier.erasure_requests", "courier.erasure_couriers", "courier.erasure_tiers",
                             "courier.reloads"}  # fmt: skip

    def comments(path):
        return sorted(line for line in path.read_text().splitlines() if line.startswith("COMMENT ON"))

    assert comments(SQL_DIR / "migrations" / name) == comments(SQL_DIR / "postgres" / "migrations" / name)
    # every new table and column, and the two columns V005 adds to the load ledger and its staging
    assert len(comments(SQL_DIR / "migrations" / name)) == len(redshift) + sum(map(len, redshift.values())) + 2


def _in_tx(url, fn):
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            out = fn(cur)
        conn.commit()
    return out


def warehouse_counts(conn) -> dict[str, dict]:
    rows = conn.execute((SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text()).fetchall()
    return {str(d): {"fact_rows": f, "rows_staged": s, "rows_inserted": i, "duplicates_skipped": k}
            for _, d, f, s, i, k in rows if d is not None}  # fmt: skip


def test_the_warehouse_erasure_removes_the_couriers_rows_gold_and_staging_and_keeps_the_ledger_reconciling(pg_database):
    """Two couriers on two dates, with a late duplicate of the erased one in the lake (the
    load skipped it): after the erasure no row of c1 is in positions, staging or
    courier_daily; positions_hourly equals a fresh recomputation; the tier counts match;
    the daily check's identities hold against the lake after the erase commit; a second
    run of the tier removes nothing."""
    d1, d2 = datetime(2026, 11, 23, 23, 10), datetime(2026, 11, 24, 0, 20)
    lake = {7: [row("a1", "c1", -23.5, -46.6, d1), row("a2", "c1", -23.51, -46.6, d1 + timedelta(minutes=2)),
                row("b1", "c2", -23.5, -46.7, d1 + timedelta(minutes=1)), row("a3", "c1", -23.52, -46.6, d2),
                row("b2", "c2", -23.5, -46.7, d2)],
            8: [row("a1", "c1", -23.5, -46.6, d1), row("b3", "c2", -23.5, -46.71, d2 + timedelta(minutes=3))]}  # fmt: skip
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, lake)
        run_file(conn, SQL_DIR / "load_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        # Staging still holds the loaded rows (4 of c1), and a later DAG run staged c1 again (its load found
        # the run loaded already): 5 staging rows of c1.
        stage(conn, {8: lake[8]}, run_id="scheduled__later")
    in_lake = Counter(str(r[4].date()) for rows in lake.values() for r in rows)
    removed = Counter(str(r[4].date()) for rows in lake.values() for r in rows if r[1] == "c1")
    _in_tx(pg_database, lambda cur: erasure.register(cur, REQUEST, ["c1"], "manual__e"))
    _in_tx(pg_database, lambda cur: erasure.record_tier(
        cur, REQUEST, "lake", "done", sum(removed.values()),
        {"commits": [ERASE_VERSION], "files_rewritten": 2, "old_files_deleted_by": None}, "manual__e"))  # fmt: skip
    sql = erasure.render_warehouse_sql(REQUEST, "manual__e", [ERASE_VERSION], dict(removed), datetime(2026, 11, 25))

    def erase(cur):
        cur.execute("LOCK courier.load_ledger")
        for statement in courier_common.sql_statements(sql):
            cur.execute(statement)

    _in_tx(pg_database, erase)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for table in ("courier.positions", "courier_staging.positions_staging", "courier_gold.courier_daily"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE courier_id = 'c1'").fetchone() == (0,), table
        assert conn.execute("SELECT event_id FROM courier.positions ORDER BY 1").fetchall() == [("b1",), ("b2",), ("b3",)]
        (tier,) = conn.execute("SELECT status, rows_removed, detail FROM courier.erasure_tiers"
                               " WHERE request_id = %s AND tier = 'warehouse'", (REQUEST,)).fetchall()  # fmt: skip
        assert tier[:2] == ("done", 3)
        assert json.loads(tier[2]) == {"positions": 3, "staging": 5, "courier_daily": 2,
                                       "positions_hourly_recomputed": 2, "erase_version": ERASE_VERSION}  # fmt: skip
        hourly_after = conn.execute("SELECT event_hour, active_couriers, positions FROM courier_gold.positions_hourly"
                                    " ORDER BY 1").fetchall()  # fmt: skip
        assert hourly_after == [(datetime(2026, 11, 23, 23), 1, 1), (datetime(2026, 11, 24, 0), 1, 2)]
        daily_after = conn.execute("SELECT event_date, courier_id, positions FROM courier_gold.courier_daily"
                                   " ORDER BY 1, 2").fetchall()  # fmt: skip
        # The same as recomputing gold from what is left.
        conn.execute("INSERT INTO courier_staging.gold_dirty_dates VALUES ('2026-11-23'), ('2026-11-24')")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT event_hour, active_couriers, positions FROM courier_gold.positions_hourly"
                            " ORDER BY 1").fetchall() == hourly_after  # fmt: skip
        assert conn.execute("SELECT event_date, courier_id, positions FROM courier_gold.courier_daily"
                            " ORDER BY 1, 2").fetchall() == daily_after  # fmt: skip
        # The daily check against the lake after the erase commit (the erase commit is the mark).
        lake_after = {d: in_lake[d] - removed[d] for d in in_lake}
        assert conn.execute("SELECT MAX(table_version) FROM courier.load_ledger").fetchone() == (ERASE_VERSION,)
        assert courier_common.lake_warehouse_mismatches(lake_after, warehouse_counts(conn), ERASE_VERSION) == []
        before = conn.execute("SELECT COUNT(*) FROM courier.positions").fetchone()

    # A second run of the tier (a rerun of the DAG): nothing removed twice, nothing recorded twice.
    again = _in_tx(pg_database, lambda cur: erasure.erase_from_warehouse(cur, REQUEST, "manual__again", "/nonexistent"))
    assert again["rows_removed"] == 3 and again["already_done"]
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM courier.positions").fetchone() == before
        assert conn.execute("SELECT COUNT(*) FROM courier.erasure_tiers").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM courier.load_ledger WHERE table_version = %s",
                            (ERASE_VERSION,)).fetchone() == (1,)  # fmt: skip


def test_the_ledger_refuses_a_request_id_reused_for_other_couriers_and_the_status_view(pg_database):
    migrate(pg_database)
    assert _in_tx(pg_database, lambda cur: erasure.register(cur, "r2", ["c1", "c2"], "manual__a")) is True
    assert _in_tx(pg_database, lambda cur: erasure.register(cur, "r2", ["c1", "c2"], "manual__b")) is False
    with pytest.raises(ValueError, match="names couriers"):
        _in_tx(pg_database, lambda cur: erasure.register(cur, "r2", ["c1"], "manual__c"))
    for tier, n in (("lake", 5), ("dead_letters", 1), ("warehouse", 4)):
        _in_tx(pg_database, lambda cur, t=tier, k=n: erasure.record_tier(cur, "r2", t, "done", k, {}, "manual__a"))
    assert not _in_tx(pg_database, lambda cur: erasure.record_tier(cur, "r2", "lake", "done", 9, {}, "manual__b"))
    with psycopg.connect(pg_database) as conn:
        status = conn.execute("SELECT courier_count, lake_rows_removed, dead_letter_lines_removed,"
                              " warehouse_rows_removed, live_store_couriers_erased, tiers_done, status"
                              " FROM courier.erasure_status WHERE request_id = 'r2'").fetchone()  # fmt: skip
        assert status == (2, 5, 1, 4, None, 3, "pending")


def test_request_ids_and_courier_ids_are_validated():
    assert erasure.request_id_of({}, "manual__2026-12-02T10:00:00+00:00") == "erasure-manual__2026-12-02T10:00:00+00:00"
    assert erasure.request_id_of({"request_id": "gdpr-42"}, "x") == "gdpr-42"
    with pytest.raises(ValueError, match="request_id"):
        erasure.request_id_of({"request_id": "a b"}, "x")
    assert erasure.courier_ids_of({"courier_ids": ["b", "a", "b"]}) == ["a", "b"]
    assert erasure.courier_ids_of({"courier_ids": "a, b"}) == ["a", "b"]
    for bad in ([], None, ["x y"], [""], [3]):
        with pytest.raises(ValueError, match="courier_ids"):
            erasure.courier_ids_of({"courier_ids": bad})
    report = {"request_id": "r", "courier_ids": ["b", "a"], "lake_rows_removed": 1, "lake_files_rewritten": 1,
              "table_version": 3, "dead_letter_lines_removed": 0, "dead_letter_files_rewritten": 0,
              "old_files_deleted_by": "2026-12-09T10:00:00Z"}  # fmt: skip
    assert erasure.parse_erase_report(json.dumps(report), "r", ["a", "b"])["table_version"] == 3
    with pytest.raises(ValueError, match="lacks"):
        erasure.parse_erase_report({"request_id": "r"}, "r", ["a"])
    with pytest.raises(ValueError, match="names couriers"):
        erasure.parse_erase_report(report, "r", ["a"])
    assert erasure._utc_wall("2026-12-09T10:00:00Z") == datetime(2026, 12, 9, 10)
    assert erasure._utc_wall("2026-12-09T07:00:00-03:00") == datetime(2026, 12, 9, 10)


def test_the_erasure_dag_is_triggered_only_bounded_alerting_and_documented(dagbag):
    dag = dagbag.dags[erasure.DAG_ID]
    assert dag.timetable.summary in ("None", "Never", None) or dag.timetable.__class__.__name__ == "NullTimetable"
    assert set(dag.params.keys()) == {"courier_ids", "request_id"}
    assert dag.dagrun_timeout and dag.doc_md and "erasure" in dag.tags
    for t in dag.tasks:
        assert t.execution_timeout, t.task_id
        assert t.on_failure_callback, t.task_id
    assert {t.task_id for t in dag.tasks} == {
        "migrate_warehouse", "register_request", "choose_lake", "erase_local", "erase_ecs_command", "erase_ecs",
        "record_lake", "erase_warehouse", "erase_live_store", "complete"}  # fmt: skip
    assert dag.get_task("complete").upstream_task_ids >= {"erase_warehouse", "erase_live_store"}
    assert "record_lake" in dag.get_task("erase_warehouse").upstream_task_ids
    ecs = dag.get_task("erase_ecs")
    assert ecs.reattach and ecs.deferrable and ecs.execution_timeout == erasure.ERASE_TIMEOUT


def test_the_ecs_erase_command_names_the_request_the_couriers_and_a_report_under_the_reports(monkeypatch):
    args = erasure.erase_args("r-1", ["a", "b"], "72")
    assert args == ["erase", "--request-id", "r-1", "--vacuum-retention-hours", "72", "--courier-id", "a",
                    "--courier-id", "b"]  # fmt: skip
    assert erasure.erase_commits({"lake_commits": [9, 7]}) == [7, 9]
    assert erasure.erase_commits({"lake_files_rewritten": 2, "table_version": 5}) == [5]
    assert erasure.erase_commits({"lake_files_rewritten": 0, "table_version": 5}) == []
