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
    assert dag.timetable.__class__.__name__ == "NullTimetable"
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


# --- end to end: the real ingest-api and compactor, dag.test() in local mode ---------------------

import subprocess  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from datetime import timezone  # noqa: E402

from test_end_to_end import (  # noqa: E402
    COMPACTOR,
    IngestApi,
    demo_venv_python,
    make_positions,
    run_dag,
    send,
    states,
    this_hour,
)


def _key(name: str) -> tuple[str, str]:
    out = subprocess.run([str(IngestApi.__init__.__globals__["INGEST_API"]), "keys", "create", name, "--rps", "10000"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return fields["token"].strip(), fields["line"].strip()


class DispatchIngestApi(IngestApi):
    """ingest-api with a courier-app key and a dispatch key (which may erase live positions)."""

    def __init__(self, data_dir):
        import time

        from test_end_to_end import INGEST_API, free_port

        self.token, line = _key("e2e")
        self.dispatch_token, dispatch_line = _key("dispatch")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(data_dir / "ingest-api.log", "wb")
        self.proc = subprocess.Popen(
            [INGEST_API, "serve", "--listen", self.url.removeprefix("http://"), "--data-dir", str(data_dir),
             "--api-keys", line, "--dispatch-api-keys", dispatch_line, "--http-workers", "2", "--linger-ms", "5"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest-api did not become ready: {(data_dir / 'ingest-api.log').read_text()}")
            time.sleep(0.05)

    def latest(self, courier_id: str) -> int:
        req = urllib.request.Request(f"{self.url}/v1/couriers/{courier_id}/position",
                                     headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code


@pytest.fixture
def erasure_env(tmp_path, pg_database, monkeypatch):
    data_dir = tmp_path / "stream"
    data_dir.mkdir()
    table = tmp_path / "lake" / "positions"
    table.parent.mkdir()
    for key, value in {"LOCAL_MODE": "true", "DATA_DIR": str(data_dir), "STREAM_NAME": "courier-positions",
                       "TABLE_URI": str(table), "COMPACTOR_BIN": str(COMPACTOR)}.items():  # fmt: skip
        monkeypatch.setenv(f"COURIER_{key}", value)
    monkeypatch.setenv("AIRFLOW_CONN_COURIER_WAREHOUSE", pg_database)
    api = DispatchIngestApi(data_dir)
    monkeypatch.setenv("AIRFLOW_CONN_COURIER_INGEST_API", f"http://:{api.dispatch_token}@{api.url.removeprefix('http://')}")
    try:
        yield {"api": api, "db": pg_database, "table": table, "tmp": tmp_path}
    finally:
        api.stop()


def lake_couriers(table) -> Counter:
    """Rows per courier in the current version of the Delta table, read by the deltalake
    library (polars): the data files, not the log's statistics."""
    code = ("import collections, json, os, sys\nimport polars as pl\n"
            "t = pl.read_delta(sys.argv[1], columns=['courier_id'])\n"
            "print(json.dumps(collections.Counter(t['courier_id'].to_list()))); sys.stdout.flush(); os._exit(0)\n")  # fmt: skip
    out = subprocess.run([demo_venv_python(), "-c", code, str(table)], capture_output=True, text=True, check=True)
    return Counter(json.loads(out.stdout))


def warehouse_couriers(db) -> dict[str, Counter]:
    with psycopg.connect(db) as conn:
        return {t: Counter(dict(conn.execute(f"SELECT courier_id, COUNT(*) FROM {t} GROUP BY 1").fetchall()))
                for t in ("courier.positions", "courier_staging.positions_staging", "courier_gold.courier_daily")}  # fmt: skip


def dead_letter_couriers(table) -> Counter:
    out: Counter = Counter()
    for f in sorted((table.parent / f"{table.name}_dead_letter").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out[(json.loads(line).get("position") or {}).get("courier_id")] += 1
    return out


def write_dead_letters(table, couriers: dict[str, int]) -> None:
    """Dead letters as a compactor run writes them for invalid positions (the API rejects
    those, so a test cannot send them): one JSON line each, naming the position."""
    directory = table.parent / f"{table.name}_dead_letter"
    directory.mkdir(exist_ok=True)
    lines = []
    for courier, n in couriers.items():
        for i in range(n):
            lines.append(json.dumps({"kind": "invalid", "reasons": ["lat: must be within [-90, 90]"],
                                     "shard_id": "shardId-000000000000", "sequence_number": str(i + 1),
                                     "datum_index": 0, "position": {"courier_id": courier, "lat": 123.0,
                                     "lon": -46.6, "event_id": f"00000000-0000-0000-0000-{i:012d}"}}))  # fmt: skip
    (directory / "run-00000000000000000001-test.jsonl").write_text("\n".join(lines) + "\n")


def crashing_compactor(tmp):
    """Fault injection: the real compactor, which exits 1 after `erase` did its work the
    first time it is called for it (a crash before the DAG could read the report)."""
    import stat
    import sys

    marker = tmp / "crashed-once"
    wrapper = tmp / "crashing-compactor"
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, subprocess, sys\n"
        f"p = subprocess.run([{str(COMPACTOR)!r}, *sys.argv[1:]])\n"
        f"if p.returncode == 0 and 'erase' in sys.argv and not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    sys.stderr.write('crash after the erase\\n'); sys.exit(1)\n"
        "sys.exit(p.returncode)\n")  # fmt: skip
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def run_erase_script(env, args: list[str]) -> subprocess.CompletedProcess:
    """scripts/erase-courier.sh with an env file naming this test's setup (its stream, table,
    database, ingest-api, the Airflow under test and its metadata database)."""
    import os
    import sys

    from conftest import DAGS_DIR, REPO_ROOT

    exports = {
        "AIRFLOW_HOME": os.environ["AIRFLOW_HOME"], "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "PYTHONPATH": str(DAGS_DIR), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "COURIER_LOCAL_MODE": "true",
        "COURIER_DATA_DIR": str(env["tmp"] / "stream"), "COURIER_STREAM_NAME": "courier-positions",
        "COURIER_TABLE_URI": str(env["table"]), "COURIER_COMPACTOR_BIN": str(COMPACTOR),
        "AIRFLOW_CONN_COURIER_WAREHOUSE": env["db"],
        "AIRFLOW_CONN_COURIER_INGEST_API": os.environ["AIRFLOW_CONN_COURIER_INGEST_API"],
        "DEMO_AIRFLOW_VENV": sys.prefix,
    }  # fmt: skip
    env_file = env["tmp"] / "erase-env.sh"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in exports.items()))
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "erase-courier.sh"), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "ERASE_ENV_FILE": str(env_file)})  # fmt: skip


def ledger_rows(db, request_id) -> dict[str, tuple]:
    with psycopg.connect(db) as conn:
        return {t: (s, n, json.loads(d), at) for t, s, n, d, at in conn.execute(
            "SELECT tier, status, rows_removed, detail, done_at FROM courier.erasure_tiers WHERE request_id = %s",
            (request_id,))}  # fmt: skip


@pytest.mark.every_version  # dag.test() with conf, a branch and trigger rules: on every Airflow version
def test_an_erasure_crashed_after_the_lake_then_rerun_removes_the_courier_from_every_tier_once(
        dagbag, erasure_env, monkeypatch):  # fmt: skip
    import courier_positions_maintenance as maintenance

    env, api = erasure_env, erasure_env["api"]
    now = datetime.now(timezone.utc)
    acked = send(api, make_positions(3, 10, now - timedelta(hours=26), seed=31))
    acked |= send(api, make_positions(3, 6, now - timedelta(hours=2), seed=32))
    hourly_run = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert hourly_run.state == "success", states(hourly_run)
    gone, kept = "courier-31-001", ["courier-31-000", "courier-31-002", "courier-32-000", "courier-32-001"]
    write_dead_letters(env["table"], {gone: 2, "courier-31-000": 1})
    lake_before, wh_before = lake_couriers(env["table"]), warehouse_couriers(env["db"])
    assert lake_before[gone] == 10 and wh_before["courier.positions"][gone] == 10
    assert api.latest(gone) == 200

    # The first run crashes right after the compactor's erase: the lake is erased, nothing recorded.
    monkeypatch.setenv("COURIER_COMPACTOR_BIN", str(crashing_compactor(env["tmp"])))
    dag = dagbag.dags[erasure.DAG_ID]
    for t in dag.tasks:
        monkeypatch.setattr(t, "retries", 0)
    conf = {"courier_ids": [gone], "request_id": "lgpd-0001"}
    first = dag.test(run_conf=conf)
    assert first.state == "failed"
    got = states(first)
    assert got["erase_local"] == "failed" and got["erase_live_store"] == "success", got
    assert got["complete"] == "upstream_failed"
    assert set(ledger_rows(env["db"], "lgpd-0001")) == {"live_store"}
    assert lake_couriers(env["table"])[gone] == 0  # the compactor did its work before the crash
    assert api.latest(gone) == 404
    with psycopg.connect(env["db"]) as conn:
        assert conn.execute("SELECT status FROM courier.erasure_status WHERE request_id = 'lgpd-0001'").fetchone() == (
            "pending",)  # fmt: skip

    # The rerun with the same request id finishes it: the compactor again (idempotent), the rest once.
    # It goes through the one command, scripts/erase-courier.sh, on this test's setup.
    live_done = ledger_rows(env["db"], "lgpd-0001")["live_store"]
    script = run_erase_script(env, ["--request-id", "lgpd-0001", gone])
    assert script.returncode == 0, script.stdout + script.stderr
    assert '"status": "complete"' in script.stdout
    tiers = ledger_rows(env["db"], "lgpd-0001")
    assert {t: (s, n) for t, (s, n, _, _) in tiers.items()} == {
        "lake": ("done", 10), "dead_letters": ("done", 2), "warehouse": ("done", 10), "live_store": ("done", 1)}
    assert tiers["live_store"] == live_done  # not done twice
    gone_dates = {p["recorded_at"][:10] for p in acked.values() if p["courier_id"] == gone}
    assert tiers["lake"][2]["commits"] and tiers["warehouse"][2]["courier_daily"] == len(gone_dates)
    with psycopg.connect(env["db"]) as conn:
        status = conn.execute("SELECT status, completed_at, vacuum_deadline, tiers_done FROM courier.erasure_status"
                              " WHERE request_id = 'lgpd-0001'").fetchone()  # fmt: skip
    assert status[0] == "complete" and status[1] and status[3] == 4
    assert status[2] > datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=167)  # retention 168 h

    # Read back independently: no row of the courier in any tier, the others untouched.
    lake_after, wh_after = lake_couriers(env["table"]), warehouse_couriers(env["db"])
    assert gone not in lake_after and {c: lake_after[c] for c in kept} == {c: lake_before[c] for c in kept}
    for table, counts in wh_after.items():
        assert gone not in counts, table
        assert {c: counts[c] for c in kept} == {c: wh_before[table][c] for c in kept}, table
    assert dead_letter_couriers(env["table"]) == Counter({"courier-31-000": 1})
    assert api.latest(gone) == 404 and api.latest("courier-31-000") == 200
    with psycopg.connect(env["db"]) as conn:
        hourly_gold = conn.execute("SELECT event_hour, active_couriers, positions FROM courier_gold.positions_hourly"
                                   " ORDER BY 1").fetchall()  # fmt: skip
    expected = Counter()
    couriers_by_hour: dict = {}
    for p in acked.values():
        if p["courier_id"] != gone:
            hour = datetime.strptime(p["recorded_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(minute=0, second=0, microsecond=0)
            expected[hour] += 1
            couriers_by_hour.setdefault(hour, set()).add(p["courier_id"])
    assert hourly_gold == [(h, len(couriers_by_hour[h]), expected[h]) for h in sorted(expected)]

    # The courier's positions still in the stream (sent again, and new ones) stay out of the table
    # and the warehouse on the next hourly run, which reconciles; other couriers' new rows load.
    late = [p for p in make_positions(3, 4, now - timedelta(hours=1), seed=33)]
    late_gone = [{**p, "courier_id": gone} for p in late[:4]]
    send(api, late_gone + late[4:])
    again = run_dag(dagbag, this_hour())
    assert again.state == "success", states(again)
    assert gone not in lake_couriers(env["table"])
    assert gone not in warehouse_couriers(env["db"])["courier.positions"]
    with psycopg.connect(env["db"]) as conn:
        (erased,) = conn.execute("SELECT erased_skipped FROM courier.load_ledger WHERE dag_run_id = %s",
                                 (again.run_id,)).fetchone()  # fmt: skip
        assert erased >= 4
        # The daily lake-versus-warehouse check holds on every date after the erasure.
        rows = conn.execute((SQL_DIR / "checks" / "lake_warehouse_counts.sql").read_text()).fetchall()
    maintenance.compare_lake_and_warehouse(rows, str(env["table"]))
