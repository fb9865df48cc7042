"""The warehouse SQL: parses with sqlfluff's Redshift dialect (which rejects PostgreSQL-only
syntax Redshift would reject), runs on PostgreSQL, computes the right numbers."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

import jinja2
import psycopg
import pytest
import sqlfluff
import sqlglot
from sqlglot import exp

from conftest import SQL_DIR

import courier_common
import courier_positions_hourly as hourly

ALL_SQL = sorted(SQL_DIR.rglob("*.sql"))
REDSHIFT_SQL = [p for p in ALL_SQL if "postgres" not in p.relative_to(SQL_DIR).parts]
POSTGRES_SQL = [p for p in ALL_SQL if "postgres" in p.relative_to(SQL_DIR).parts]


def _run(version, run, rows, files, manifest, duplicates=0, dead=0):
    return {"table_version": version, "run": run, "records_read": rows + duplicates + dead,
            "positions_decoded": rows + duplicates + dead, "duplicates_dropped": duplicates, "dead_lettered": dead,
            "rows_written": rows, "files_added": files, "manifest": manifest}  # fmt: skip


SAMPLE_RUNS = [
    _run(7, 6, 120, 2, "s3://courier-lake/manifests/v00000000000000000007.json", duplicates=3, dead=1),
    _run(8, 7, 0, 0, None),
    _run(9, 8, 5, 1, "s3://courier-lake/manifests/v00000000000000000009.json"),
]
RUN_ID = "scheduled__2026-11-24T10:00:00+00:00"


def render(path, **extra) -> str:
    """Render a file as the DAG would (Jinja), with fixed sample values."""
    context = {
        "data_interval_start": datetime(2026, 11, 24, 10),
        "data_interval_end": datetime(2026, 11, 24, 11),
        "params": {"freshness_hours": 3},
        "runs": SAMPLE_RUNS,
        "run_id": RUN_ID,
        "iam_role": "arn:aws:iam::123456789012:role/redshift-copy",
        "courier_local_mode": lambda: False,
        "courier_setting": lambda key: {"gold_max_speed_mps": "50", "gold_max_gap_minutes": "15",
                                        "gold_final_after_hours": "6", "gold_timezone": "America/Sao_Paulo"}[key],
        "courier_utcnow": lambda: datetime(2026, 11, 25, 5, 0),
        **extra,
    }
    return jinja2.Template(path.read_text()).render(**context)


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in s.strip().splitlines())]


def test_sql_files_exist():
    names = {str(p.relative_to(SQL_DIR)) for p in ALL_SQL}
    assert {
        "migrations/V001__tables.sql", "migrations/V002__analyst_role.sql", "migrations/V003__schemas.sql", "migrations/V004__ledger_dates.sql",
        "copy_staging.sql", "load_positions.sql", "refresh_gold.sql", "maintenance.sql",
        "postgres/migrations/V001__tables.sql", "postgres/migrations/V002__analyst_role.sql",
        "postgres/migrations/V003__schemas.sql", "postgres/migrations/V004__ledger_dates.sql",
        "checks/lake_warehouse_counts.sql", "checks/staging_row_count.sql",
        "checks/staging_no_null_keys.sql", "checks/staging_coordinates_in_range.sql",
        "checks/fact_no_duplicate_event_ids.sql",
    } <= names  # fmt: skip


def parses(sql: str, dialect: str) -> bool:
    try:
        sqlfluff.parse(sql, dialect=dialect)
    except sqlfluff.api.APIParsingError:
        return False
    return True


@pytest.mark.parametrize("path", REDSHIFT_SQL, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_every_sql_file_parses_as_redshift(path):
    assert parses(render(path), "redshift")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT payload::jsonb -> 'a' FROM courier.positions;",
        "CREATE TABLE t (a INT GENERATED ALWAYS AS IDENTITY);",
        "INSERT INTO courier.positions (event_id) VALUES ('a') ON CONFLICT DO NOTHING;",
        "CREATE TABLE t (a VARCHAR(3)) PARTITION BY RANGE (a);",
    ],
)
def test_the_redshift_parse_rejects_postgresql_only_syntax(sql):
    """The parse above can fail: PostgreSQL-only statements Redshift would reject do not
    pass it (the PostgreSQL dialect accepts them)."""
    assert parses(sql, "postgres")
    assert not parses(sql, "redshift")


@pytest.mark.parametrize("path", POSTGRES_SQL, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_postgres_variants_parse_as_postgres(path):
    assert parses(render(path), "postgres")


def test_copy_stages_every_planned_manifest_in_order_stamped_with_the_dag_run():
    sql = render(SQL_DIR / "copy_staging.sql")
    parsed = sqlglot.parse(sql, read="redshift")
    copies = [e for e in parsed if isinstance(e, exp.Copy)]
    assert len(copies) == 2, "one COPY per run with files"
    assert all(c.this.name == "positions_copy" and not c.this.expressions for c in copies), "COPY by position"
    flat = " ".join(sql.split())
    first = flat.index("FROM 's3://courier-lake/manifests/v00000000000000000007.json'")
    assert first < flat.index("FROM 's3://courier-lake/manifests/v00000000000000000009.json'")
    assert flat.count("FORMAT AS PARQUET MANIFEST") == 2
    assert flat.count("IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy'") == 2
    inserts = [e for e in parsed if isinstance(e, exp.Insert)]
    assert [e.this.this.name for e in inserts] == [
        "positions_staging", "compactor_runs_staging",  # version 7
        "compactor_runs_staging",  # version 8: no files
        "positions_staging", "compactor_runs_staging",  # version 9
    ]  # fmt: skip
    assert f"'{RUN_ID}', 7 FROM positions_copy" in flat and f"'{RUN_ID}', 9 FROM positions_copy" in flat
    assert "NULL" in inserts[2].sql() and "v00000000000000000009.json" in inserts[4].sql()
    # A retry deletes only its own DAG run's rows (and rows left over two days ago).
    deletes = [e for e in parsed if isinstance(e, exp.Delete)]
    assert {d.this.name for d in deletes} == {"positions_staging", "compactor_runs_staging", "positions_copy"}
    assert flat.count(f"WHERE dag_run_id = '{RUN_ID}' OR staged_at < DATEADD(DAY, -2, GETDATE())") == 2
    assert not [e for e in parsed if isinstance(e, exp.TruncateTable)], "TRUNCATE would empty other runs' rows"
    # No runs to load: only the clean-up of this run's rows.
    empty = sqlglot.parse(render(SQL_DIR / "copy_staging.sql", runs=[]), read="redshift")
    assert not [e for e in empty if isinstance(e, (exp.Copy, exp.Insert))]
    # A quote in a run id cannot break out of the literal.
    assert parses(render(SQL_DIR / "copy_staging.sql", run_id="manual__x'; DROP TABLE courier.positions; --"), "redshift")


def _columns(path, dialect) -> dict[str, list[tuple[str, str]]]:
    tables = {}
    for e in sqlglot.parse(render(path), read=dialect):
        if isinstance(e, exp.Create):
            schema = e.this
            if not isinstance(schema, exp.Schema):  # CREATE SCHEMA
                continue
            name = f"{schema.this.db}.{schema.this.name}" if schema.this.db else schema.this.name
            tables[name] = [
                (c.name, c.args["kind"].sql(dialect="postgres"))
                for c in schema.expressions
                if isinstance(c, exp.ColumnDef)
            ]
    return tables


# The tables as they are now: created by V001 in the default schema, moved into their
# schemas by V003 (the same columns).
TABLES = {"courier.positions", "courier_staging.positions_staging", "courier_staging.gold_dirty_dates",
          "courier_gold.courier_daily", "courier_gold.positions_hourly", "courier_staging.compactor_runs_staging",
          "courier.load_ledger"}  # fmt: skip
NOW_TABLES = TABLES | {"courier.load_ledger_dates"}  # V004
NOW_TABLES |= {"courier.erasure_requests", "courier.erasure_couriers", "courier.erasure_tiers", "courier.reloads"}  # V005


@pytest.mark.parametrize("migration", ["V001__tables.sql", "V003__schemas.sql"])
def test_redshift_and_postgres_ddl_declare_the_same_columns(migration):
    redshift = _columns(SQL_DIR / "migrations" / migration, "redshift")
    postgres = _columns(SQL_DIR / "postgres" / "migrations" / migration, "postgres")
    assert redshift == postgres
    assert {t.rpartition(".")[2] for t in redshift} == {t.rpartition(".")[2] for t in TABLES}


def test_the_schema_move_keeps_every_column_and_comments_the_same_in_both_dialects():
    """V003 recreates each V001 table in its schema with the same columns (Redshift cannot
    move a table), and declares the same comments in both dialects, so the PostgreSQL
    runs below (every table and column commented) vouch for the Redshift file too."""
    before = _columns(SQL_DIR / "migrations" / "V001__tables.sql", "redshift")
    after = _columns(SQL_DIR / "migrations" / "V003__schemas.sql", "redshift")
    assert set(after) == TABLES
    assert {t.rpartition(".")[2]: cols for t, cols in after.items()} == before

    def comments(path):
        return sorted(line for line in path.read_text().splitlines() if line.startswith("COMMENT ON"))

    assert comments(SQL_DIR / "migrations" / "V003__schemas.sql") == comments(
        SQL_DIR / "postgres" / "migrations" / "V003__schemas.sql")
    assert len(comments(SQL_DIR / "migrations" / "V003__schemas.sql")) == len(TABLES) + sum(map(len, after.values()))


def test_staging_holds_the_parquet_columns_in_order_then_the_stamps():
    tables = {t.rpartition(".")[2]: c for t, c in _columns(SQL_DIR / "migrations" / "V003__schemas.sql", "redshift").items()}
    assert tuple(name for name, _ in tables["positions_staging"]) == (
        *hourly.PARQUET_COLUMNS, "dag_run_id", "table_version", "staged_at")
    assert [name for name, _ in tables["positions"]] == [*hourly.PARQUET_COLUMNS, "event_date", "table_version",
                                                         "loaded_at"]
    assert dict(tables["positions"]) == {
        "event_id": "VARCHAR(36)", "courier_id": "VARCHAR(64)", "lat": "DOUBLE PRECISION",
        "lon": "DOUBLE PRECISION", "recorded_at": "TIMESTAMP", "received_at": "TIMESTAMP",
        "accuracy_m": "DOUBLE PRECISION", "speed_mps": "DOUBLE PRECISION",
        "heading_deg": "DOUBLE PRECISION", "order_id": "VARCHAR(64)", "event_date": "DATE",
        "table_version": "BIGINT", "loaded_at": "TIMESTAMP",
    }  # fmt: skip


def test_redshift_ddl_distributes_by_courier_and_sorts_by_time():
    for migration, create in (("V001__tables.sql", "CREATE TABLE IF NOT EXISTS positions"),
                              ("V003__schemas.sql", "CREATE TABLE courier.positions")):
        ddl = " ".join((SQL_DIR / "migrations" / migration).read_text().split())
        assert re.search(re.escape(create) + r" \(.*?\) DISTSTYLE KEY DISTKEY \(courier_id\) SORTKEY \(recorded_at\);", ddl)


def test_the_load_is_insert_only_bounded_by_the_batch_and_joined_on_the_distribution_key():
    sql = render(SQL_DIR / "load_positions.sql")
    parsed = sqlglot.parse(sql, read="redshift")
    writes = [e for e in parsed if isinstance(e, (exp.Insert, exp.Update, exp.Delete, exp.Merge))]
    targets = [(type(e).__name__, e.this.this.name if isinstance(e.this, exp.Schema) else e.this.name) for e in writes]
    assert ("Insert", "positions") in targets
    assert not [t for t in targets if t[1] == "positions" and t[0] != "Insert"], "insert-only"
    for e in writes:
        if isinstance(e, exp.Insert):
            assert isinstance(e.this, exp.Schema) and e.this.expressions, "INSERT column list is missing"
    flat = " ".join(sql.split())
    # The lookup of existing event ids: within the batch's recorded_at range, on courier_id.
    assert "ON p.recorded_at BETWEEN b.min_recorded_at AND b.max_recorded_at" in flat
    assert "ON p.courier_id = st.courier_id AND p.event_id = st.event_id" in flat
    assert flat.count(f"dag_run_id = '{RUN_ID}'") == 2
    assert flat.startswith("BEGIN; LOCK courier.load_ledger;") or "BEGIN; LOCK courier.load_ledger;" in flat
    assert flat.rstrip().endswith("COMMIT;")


# --- against PostgreSQL --------------------------------------------------------------------------

def haversine_km(lat1, lon1, lat2, lon2):
    r = 6371.0088
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(min(1.0, a)))


def migrate(url) -> list[str]:
    """What the migrate_warehouse task does in local mode."""
    with psycopg.connect(url) as conn:
        return courier_common.apply_migrations(conn, postgres=True)


def run_file(conn, path, **extra):
    conn.execute(render(path, courier_local_mode=lambda: True, **extra))


def stage(conn, rows_by_version: dict, run_id=RUN_ID, runs=None, clean=True):
    """What load_staging does in local mode: delete this DAG run's earlier staging, stage
    each compactor run's rows stamped with the DAG run and the table version, record the
    runs (their rows_written = the rows given, unless `runs` says otherwise)."""
    if clean:
        for table in ("courier_staging.positions_staging", "courier_staging.compactor_runs_staging"):
            conn.execute(hourly.STAGING_CLEANUP.format(table=table), (run_id,))
    runs = runs or [_run(v, v - 1, len(rows), 1 if rows else 0, f"/lake/_manifests/v{v:020d}.json" if rows else None)
                    for v, rows in rows_by_version.items()]  # fmt: skip
    for r in runs:
        conn.execute(hourly.RUNS_STAGING_INSERT, hourly.runs_staging_row(run_id, r))
    columns = ", ".join((*hourly.PARQUET_COLUMNS, "dag_run_id", "table_version"))
    with conn.cursor().copy(f"COPY courier_staging.positions_staging ({columns}) FROM STDIN") as copy:
        for version, rows in rows_by_version.items():
            for row_ in rows:
                copy.write_row((*row_, run_id, version))


def row(event_id, courier, lat, lon, recorded_at, speed=None):
    return (event_id, courier, lat, lon, recorded_at, recorded_at + timedelta(seconds=1), 5.0, speed, 90.0, None)


def first_row(conn, path, **extra):
    return conn.execute(render(path, **extra)).fetchone()


def ledger(conn, run_id=None):
    cols = ", ".join(hourly.LEDGER_COLUMNS)
    where = "WHERE dag_run_id = %s" if run_id else ""
    return [dict(zip(hourly.LEDGER_COLUMNS, r)) for r in conn.execute(
        f"SELECT {cols} FROM courier.load_ledger {where} ORDER BY table_version", (run_id,) if run_id else ())]


def test_postgres_pipeline_sql_loads_insert_only_and_refreshes_gold(pg_database):
    day1, day2 = datetime(2026, 11, 23, 23, 50), datetime(2026, 11, 24, 0, 10)
    batch1 = {
        7: [
            row("e1", "c1", -23.56, -46.65, day1, 8.0),
            row("e2", "c1", -23.57, -46.66, day1 + timedelta(minutes=5), 6.0),
            row("e3", "c1", -23.58, -46.64, day2, None),  # next day: its own courier_daily row
            row("e4", "c2", -23.50, -46.60, day2 + timedelta(minutes=1), 3.0),
        ],
        8: [row("e4", "c2", -23.99, -46.60, day2 + timedelta(minutes=1), 3.0)],  # repeated in a later run
    }
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert migrate(pg_database)[:4] == ["V001__tables", "V002__analyst_role", "V003__schemas", "V004__ledger_dates"]
        assert migrate(pg_database) == []  # applied once
        stage(conn, batch1)
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql") == (5,)
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql", run_id="another") == (0,)
        assert all(first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql"))
        assert all(first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql"))
        run_file(conn, SQL_DIR / "load_positions.sql")
        assert all(first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql"))
        assert conn.execute("SELECT COUNT(*) FROM courier_staging.gold_dirty_dates").fetchone() == (2,)
        # First copy wins: e4 keeps the latitude of table version 7.
        assert conn.execute("SELECT lat, table_version FROM courier.positions WHERE event_id = 'e4'").fetchone() == (-23.50, 7)
        # The ledger, written in the load's transaction, reconciles hop by hop.
        rows = ledger(conn, RUN_ID)
        assert [(r["table_version"], r["rows_staged"], r["rows_inserted"], r["late_duplicates_skipped"],
                 r["batch_duplicates_skipped"]) for r in rows] == [(7, 4, 4, 0, 0), (8, 1, 0, 0, 1)]  # fmt: skip
        assert hourly.reconcile_ledger(rows) == []
        run_file(conn, SQL_DIR / "load_positions.sql")  # a retried load records nothing twice
        assert conn.execute("SELECT COUNT(*) FROM courier.load_ledger").fetchone() == (2,)
        assert conn.execute("SELECT COUNT(*) FROM courier.positions").fetchone() == (4,)
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM courier_staging.gold_dirty_dates").fetchone() == (0,)

        facts = conn.execute("SELECT event_id, event_date FROM courier.positions ORDER BY event_id").fetchall()
        assert facts == [("e1", date(2026, 11, 23)), ("e2", date(2026, 11, 23)), ("e3", date(2026, 11, 24)), ("e4", date(2026, 11, 24))]
        daily = conn.execute(
            "SELECT event_date, courier_id, positions, first_seen_at, last_seen_at, distance_km, avg_speed_mps"
            " FROM courier_gold.courier_daily ORDER BY event_date, courier_id"
        ).fetchall()
        assert [d[:5] for d in daily] == [
            (date(2026, 11, 23), "c1", 2, day1, day1 + timedelta(minutes=5)),
            (date(2026, 11, 24), "c1", 1, day2, day2),
            (date(2026, 11, 24), "c2", 1, day2 + timedelta(minutes=1), day2 + timedelta(minutes=1)),
        ]
        assert daily[0][5] == pytest.approx(haversine_km(-23.56, -46.65, -23.57, -46.66), rel=1e-9)
        assert daily[0][6] == pytest.approx(7.0)
        assert daily[1][5] == 0 and daily[1][6] is None
        hourly_rows = conn.execute("SELECT event_hour, active_couriers, positions FROM courier_gold.positions_hourly ORDER BY 1").fetchall()
        assert hourly_rows == [(datetime(2026, 11, 23, 23), 1, 2), (datetime(2026, 11, 24, 0), 2, 2)]

        # A second DAG run: one late duplicate (e2, already loaded) and a later position of c1 on day 1.
        second = "scheduled__2026-11-24T11:00:00+00:00"
        stage(conn, {9: [row("e2", "c1", -23.57, -46.66, day1 + timedelta(minutes=5), 6.0),
                         row("e5", "c1", -23.59, -46.67, day1 + timedelta(minutes=8), 10.0)]}, run_id=second)
        run_file(conn, SQL_DIR / "load_positions.sql", run_id=second)
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM courier.positions").fetchone() == (5,)
        (r9,) = ledger(conn, second)
        assert (r9["rows_staged"], r9["rows_inserted"], r9["late_duplicates_skipped"]) == (2, 1, 1)
        assert conn.execute("SELECT MAX(table_version) FROM courier.load_ledger").fetchone() == (9,)
        d1 = conn.execute("SELECT positions, distance_km, avg_speed_mps FROM courier_gold.courier_daily WHERE event_date = '2026-11-23'").fetchone()
        expected = haversine_km(-23.56, -46.65, -23.57, -46.66) + haversine_km(-23.57, -46.66, -23.59, -46.67)
        assert d1[0] == 3 and d1[1] == pytest.approx(expected, rel=1e-9) and d1[2] == pytest.approx(8.0)
        # Day 2 was not touched by the second load: refreshed once only.
        snapshot = conn.execute("SELECT * FROM courier_gold.courier_daily ORDER BY 1, 2").fetchall()
        run_file(conn, SQL_DIR / "refresh_gold.sql")  # nothing queued: nothing changes
        assert conn.execute("SELECT * FROM courier_gold.courier_daily ORDER BY 1, 2").fetchall() == snapshot

        # As the maintenance DAG runs it: one statement at a time, autocommit.
        for statement in statements(render(SQL_DIR / "maintenance.sql")):
            conn.execute(statement)


def test_concurrent_dag_runs_never_mix_staging_nor_load_a_compactor_run_twice(pg_database):
    """A backfill runs several DAG runs at once: each stages (and checks) only its own rows;
    when two staged the same compactor run, the first load wins and the second inserts
    nothing; a retry of one run's staging leaves the other's rows alone."""
    t = datetime(2026, 11, 24, 10)
    a, b = "backfill__2026-11-24T10:00:00+00:00", "backfill__2026-11-24T11:00:00+00:00"
    rows = {3: [row(f"e{i}", "c1", -23.5, -46.6, t + timedelta(minutes=i)) for i in range(4)]}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, rows, run_id=a)
        stage(conn, rows, run_id=b)
        stage(conn, rows, run_id=a)  # a retry of A's staging: B's rows stay
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql", run_id=a) == (4,)
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql", run_id=b) == (4,)
        run_file(conn, SQL_DIR / "load_positions.sql", run_id=b)
        run_file(conn, SQL_DIR / "load_positions.sql", run_id=a)
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM courier.positions").fetchone() == (4, 4)
        assert [(r["table_version"], r["rows_inserted"]) for r in ledger(conn)] == [(3, 4)]
        assert ledger(conn, a) == []  # A found the compactor run loaded already
        assert conn.execute("SELECT dag_run_id FROM courier.load_ledger").fetchone() == (b,)


def test_a_broken_hop_shows_in_the_ledger_numbers(pg_database):
    """Fault injection: a staged row vanishes before the load (lake != staged) and a
    compactor report overstates its duplicates (stream identity): the reconcile check
    names both runs and their numbers."""
    t = datetime(2026, 11, 24, 10)
    rows = {3: [row(f"e{i}", "c1", -23.5, -46.6, t + timedelta(minutes=i)) for i in range(4)],
            4: [row("f1", "c2", -23.5, -46.6, t)]}  # fmt: skip
    runs = [_run(3, 2, 4, 1, "/m3.json"), {**_run(4, 3, 1, 1, "/m4.json"), "duplicates_dropped": 5}]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, rows, runs=runs)
        conn.execute("DELETE FROM courier_staging.positions_staging WHERE event_id = 'e2'")
        run_file(conn, SQL_DIR / "load_positions.sql")
        broken = hourly.reconcile_ledger(ledger(conn, RUN_ID))
    assert len(broken) == 2
    assert "table version 3): lake != staged: rows_written 4, rows_staged 3" in broken[0]
    assert "table version 4): stream != lake + duplicates + dead letters: positions_decoded 1" in broken[1]


def test_postgres_checks_pass_on_an_empty_staging_table(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql") == (0,)
        assert first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql") == (1, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql") == (1, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql") == (1,)
        run_file(conn, SQL_DIR / "load_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM courier.positions").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM courier.load_ledger").fetchone() == (0,)


def test_postgres_checks_catch_bad_rows(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        now = datetime(2026, 11, 24, 10)
        stage(conn, {3: [row(None, "c1", 1.0, 2.0, now), row("e2", "c1", 91.0, 2.0, now)]})
        assert first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql") == (0, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql") == (0, 1, 1)
        # Other DAG runs' bad rows are not this run's problem.
        assert first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql", run_id="other") == (1, 1, 1)
        # Redshift does not enforce primary keys: simulate a duplicate without one.
        conn.execute("ALTER TABLE courier.positions DROP CONSTRAINT positions_pkey")
        for _ in range(2):
            conn.execute("INSERT INTO courier.positions (event_id, courier_id, lat, lon, recorded_at, received_at, event_date,"
                         " table_version) VALUES ('e2', 'c1', 1, 2, %s, %s, %s, 3)", (now, now, now.date()))
        assert first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql") == (0,)


def test_gold_distance_ignores_jitter_impossible_speeds_and_gaps_and_says_when_a_day_is_final(pg_database):
    metre = 1 / (2 * math.pi * 6371008.8 / 360)  # degrees of latitude per metre on the haversine sphere
    t0, lat0, lon = datetime(2026, 11, 24, 0, 30), -23.5, -46.6
    fixes = [  # (seconds after t0, metres north of lat0)
        (0, 0),
        (60, 2),  # 2 m, accuracy 5 m: jitter, not counted
        (120, 502),  # 500 m in 60 s (8.3 m/s): counted
        (180, 20502),  # 20 km in 60 s: a bad fix, not counted
        (240, 802),  # back from the bad fix: still an impossible speed, not counted
        (240 + 36 * 60, 1802),  # 1 km after a 36 min gap: not counted
    ]
    rows = [row(f"j{i}", "c9", lat0 + m * metre, lon, t0 + timedelta(seconds=s)) for i, (s, m) in enumerate(fixes)]
    old_day = [row("old", "c8", lat0, lon, datetime(2026, 11, 23, 12))]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        stage(conn, {3: rows + old_day})
        run_file(conn, SQL_DIR / "load_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        got = conn.execute("SELECT event_date, courier_id, positions, distance_km, steps_counted, steps_ignored, is_final"
                           " FROM courier_gold.courier_daily ORDER BY event_date").fetchall()  # fmt: skip
        assert got[0] == (date(2026, 11, 23), "c8", 1, 0, 0, 0, True)  # ended more than 6 h before the refresh
        assert got[1][:3] == (date(2026, 11, 24), "c9", 6) and got[1][4:] == (1, 4, False)
        assert got[1][3] == pytest.approx(0.5, rel=1e-9)
        # The hour in local time (America/Sao_Paulo, UTC-3) beside the UTC one.
        assert conn.execute("SELECT event_hour, event_date, local_hour, local_date FROM courier_gold.positions_hourly"
                            " WHERE event_date = '2026-11-24' ORDER BY 1").fetchall()[0] == (
            datetime(2026, 11, 24, 0), date(2026, 11, 24), datetime(2026, 11, 23, 21), date(2026, 11, 23))


WAREHOUSE_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"


def test_every_warehouse_table_and_column_has_a_comment_and_a_dictionary_entry(pg_database):
    migrate(pg_database)
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute(
            "SELECT n.nspname || '.' || c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            f" WHERE {WAREHOUSE_SCHEMAS} AND c.relkind = 'r' AND c.relname <> 'schema_migrations'"
        ).fetchall()
        columns = conn.execute(
            "SELECT n.nspname || '.' || c.relname, a.attname, col_description(c.oid, a.attnum)"
            " FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            f" WHERE {WAREHOUSE_SCHEMAS} AND c.relkind = 'r' AND c.relname <> 'schema_migrations'"
            " AND a.attnum > 0 AND NOT a.attisdropped"
        ).fetchall()
    # Every table is in its schema (none left in public but the migrations' own record).
    assert {t for t, _ in tables} == NOW_TABLES
    assert all(doc for _, doc in tables), tables
    assert len(columns) > 60 and [(t, c) for t, c, doc in columns if not doc] == []
    # The data dictionary in the README documents each of them.
    readme = (SQL_DIR.parent / "README.md").read_text()
    dictionary = readme[readme.index("## Data dictionary"):]
    for table, _ in tables:
        assert f"### `{table}`" in dictionary, table
    for table, column, _ in columns:
        section = dictionary[dictionary.index(f"### `{table}`"):]
        section = section[: section.index("\n### ", 1)] if "\n### " in section[1:] else section
        assert f"| `{column}` |" in section, (table, column)


ANALYST_TABLES = ("courier.positions", "courier.load_ledger", "courier.load_ledger_dates", "courier_gold.courier_daily",
                  "courier_gold.positions_hourly")


def test_the_analyst_role_reads_facts_gold_and_ledger_but_not_staging(pg_database):
    migrate(pg_database)
    with psycopg.connect(pg_database) as conn:
        def can(table, privilege="SELECT"):
            return conn.execute("SELECT has_table_privilege('courier_analyst', %s, %s)", (table, privilege)).fetchone()[0]

        def schema(name):
            return conn.execute("SELECT has_schema_privilege('courier_analyst', %s, 'USAGE')", (name,)).fetchone()[0]

        assert all(can(t) for t in ANALYST_TABLES)
        assert not any(can(t) for t in NOW_TABLES - set(ANALYST_TABLES))
        assert not any(can(t, "INSERT") or can(t, "DELETE") for t in NOW_TABLES)
        assert schema("courier") and schema("courier_gold") and not schema("courier_staging")
    # As the analyst: the fact and gold tables read, staging refused.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET ROLE courier_analyst")
        for table in ANALYST_TABLES:
            conn.execute(f"SELECT COUNT(*) FROM {table}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT COUNT(*) FROM courier_staging.positions_staging")


def test_the_ledger_per_date_and_the_warehouse_counts_of_the_daily_check(pg_database):
    """load_positions.sql writes, per compactor run and event_date, the rows staged, inserted
    and skipped; lake_warehouse_counts.sql adds them up per date beside the rows in
    courier.positions, in one statement; the comparison with the lake names every broken
    date with its numbers."""
    import courier_positions_maintenance as maintenance

    day1, day2 = datetime(2026, 11, 23, 23, 50), datetime(2026, 11, 24, 0, 10)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        migrate(pg_database)
        counts = SQL_DIR / "checks" / "lake_warehouse_counts.sql"
        assert conn.execute(render(counts)).fetchall() == [(0, None, None, None, None, None)]  # empty warehouse
        stage(conn, {7: [row("e1", "c1", -23.5, -46.6, day1), row("e2", "c1", -23.5, -46.6, day2)],
                     8: [row("e2", "c1", -23.5, -46.6, day2), row("e3", "c2", -23.5, -46.6, day2)]})
        run_file(conn, SQL_DIR / "load_positions.sql")
        second = "scheduled__2026-11-24T11:00:00+00:00"
        stage(conn, {9: [row("e3", "c2", -23.5, -46.6, day2), row("e4", "c2", -23.5, -46.6, day1)]}, run_id=second)
        run_file(conn, SQL_DIR / "load_positions.sql", run_id=second)
        by_run = conn.execute("SELECT table_version, event_date, rows_staged, rows_inserted, duplicates_skipped"
                              " FROM courier.load_ledger_dates ORDER BY 1, 2").fetchall()  # fmt: skip
        d1, d2 = day1.date(), day2.date()
        assert by_run == [(7, d1, 1, 1, 0), (7, d2, 1, 1, 0), (8, d2, 2, 1, 1), (9, d1, 1, 1, 0), (9, d2, 1, 0, 1)]
        rows = conn.execute(render(counts)).fetchall()
        assert rows == [(9, d1, 2, 2, 2, 0), (9, d2, 2, 4, 2, 2)]
        # The lake as the compactor wrote it: 2 rows on day 1, 4 on day 2 (with the 2 duplicates the load skipped).
        lake = {str(d1): 2, str(d2): 4}
        warehouse = {str(d): {"fact_rows": f, "rows_staged": s_, "rows_inserted": i, "duplicates_skipped": k}
                     for _, d, f, s_, i, k in rows}  # fmt: skip
        assert courier_common.lake_warehouse_mismatches(lake, warehouse, 9) == []
        # A row lost from the warehouse, a date the lake has and the warehouse lacks: named with the numbers.
        conn.execute("DELETE FROM courier.positions WHERE event_id = 'e4'")
        rows = conn.execute(render(counts)).fetchall()
        broken = courier_common.lake_warehouse_mismatches({**lake, "2026-11-25": 3}, {
            str(d): {"fact_rows": f, "rows_staged": s_, "rows_inserted": i, "duplicates_skipped": k}
            for _, d, f, s_, i, k in rows}, 9)  # fmt: skip
        assert broken == [
            "event_date 2026-11-23: lake 2 rows (table version 9) != warehouse 1 rows in courier.positions + 0 duplicates skipped",
            "event_date 2026-11-23: courier.positions holds 1 rows, the load ledger inserted 2",
            "event_date 2026-11-25: lake 3 rows (table version 9) != warehouse 0 rows in courier.positions + 0 duplicates skipped",
        ]
        assert maintenance.compare_lake_and_warehouse  # the DAG's comparison (end to end: test_end_to_end.py)
