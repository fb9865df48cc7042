"""The warehouse SQL: parses as Redshift, runs on PostgreSQL, computes the right numbers."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta

import jinja2
import psycopg
import pytest
import sqlglot
from sqlglot import exp

from conftest import SQL_DIR

import courier_positions_hourly as hourly

ALL_SQL = sorted(SQL_DIR.rglob("*.sql"))
REDSHIFT_SQL = [p for p in ALL_SQL if "postgres" not in p.relative_to(SQL_DIR).parts]
POSTGRES_SQL = [p for p in ALL_SQL if "postgres" in p.relative_to(SQL_DIR).parts]


SAMPLE_RUNS = [
    {"table_version": 7, "run": 6, "rows_written": 120, "files_added": 2,
     "manifest": "s3://courier-lake/manifests/v00000000000000000007.json"},
    {"table_version": 8, "run": 7, "rows_written": 0, "files_added": 0, "manifest": None},
    {"table_version": 9, "run": 8, "rows_written": 5, "files_added": 1,
     "manifest": "s3://courier-lake/manifests/v00000000000000000009.json"},
]  # fmt: skip


def render(path, **extra) -> str:
    """Render a file as the DAG would (Jinja), with fixed sample values."""
    context = {
        "data_interval_start": datetime(2026, 11, 24, 10),
        "data_interval_end": datetime(2026, 11, 24, 11),
        "params": {"freshness_hours": 3},
        "runs": SAMPLE_RUNS,
        "iam_role": "arn:aws:iam::123456789012:role/redshift-copy",
        "courier_local_mode": lambda: False,
        **extra,
    }
    return jinja2.Template(path.read_text()).render(**context)


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in s.strip().splitlines())]


def test_sql_files_exist():
    names = {str(p.relative_to(SQL_DIR)) for p in ALL_SQL}
    assert {
        "create_tables.sql", "copy_staging.sql", "merge_positions.sql", "refresh_gold.sql",
        "maintenance.sql", "postgres/create_tables.sql", "checks/staging_row_count.sql",
        "checks/staging_no_null_keys.sql", "checks/staging_coordinates_in_range.sql",
        "checks/fact_no_duplicate_event_ids.sql", "checks/fact_freshness.sql",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", REDSHIFT_SQL, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_every_sql_file_parses_as_redshift(path):
    parsed = sqlglot.parse(render(path), read="redshift")
    assert parsed and all(e is not None for e in parsed)
    # Only VACUUM is allowed to fall back to an opaque command.
    for e in parsed:
        if isinstance(e, exp.Command):
            assert e.name.upper() == "VACUUM", e.sql()


@pytest.mark.parametrize("path", POSTGRES_SQL, ids=lambda p: str(p.relative_to(SQL_DIR)))
def test_postgres_variants_parse_as_postgres(path):
    assert sqlglot.parse(render(path), read="postgres")


def test_copy_loads_every_planned_manifest_in_order_as_parquet_by_position():
    sql = render(SQL_DIR / "copy_staging.sql")
    parsed = sqlglot.parse(sql, read="redshift")
    copies = [e for e in parsed if isinstance(e, exp.Copy)]
    assert len(copies) == 2, "one COPY per run with files"
    assert all(c.this.name == "positions_staging" and not c.this.expressions for c in copies), "COPY by position"
    flat = " ".join(sql.split())
    first = flat.index("FROM 's3://courier-lake/manifests/v00000000000000000007.json'")
    assert first < flat.index("FROM 's3://courier-lake/manifests/v00000000000000000009.json'")
    assert flat.count("FORMAT AS PARQUET MANIFEST") == 2
    assert flat.count("IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy'") == 2
    inserts = [e for e in parsed if isinstance(e, exp.Insert)]
    assert [e.this.this.name for e in inserts] == ["compactor_runs_staging"] * 3
    assert "NULL" in inserts[1].sql() and "v00000000000000000009.json" in inserts[2].sql()
    truncated = {t.name for e in parsed if isinstance(e, exp.TruncateTable) for t in e.expressions}
    assert truncated == {"positions_staging", "compactor_runs_staging"}
    # No runs to load: only empties the staging tables.
    empty = sqlglot.parse(render(SQL_DIR / "copy_staging.sql", runs=[]), read="redshift")
    assert [type(e).__name__ for e in empty] == ["TruncateTable", "TruncateTable"]


def _columns(path, dialect) -> dict[str, list[tuple[str, str]]]:
    tables = {}
    for e in sqlglot.parse(render(path), read=dialect):
        if isinstance(e, exp.Create):
            schema = e.this
            tables[schema.this.name] = [
                (c.name, c.args["kind"].sql(dialect="postgres"))
                for c in schema.expressions
                if isinstance(c, exp.ColumnDef)
            ]
    return tables


def test_redshift_and_postgres_ddl_declare_the_same_columns():
    redshift = _columns(SQL_DIR / "create_tables.sql", "redshift")
    postgres = _columns(SQL_DIR / "postgres" / "create_tables.sql", "postgres")
    assert redshift == postgres
    assert set(redshift) == {"positions", "positions_staging", "gold_dirty_dates", "courier_daily", "positions_hourly",
                             "compactor_runs_staging", "compactor_loads"}


def test_staging_holds_exactly_the_parquet_columns_in_order():
    tables = _columns(SQL_DIR / "create_tables.sql", "redshift")
    assert tuple(name for name, _ in tables["positions_staging"]) == hourly.PARQUET_COLUMNS
    assert [name for name, _ in tables["positions"]] == [*hourly.PARQUET_COLUMNS, "event_date", "loaded_at"]
    assert dict(tables["positions"]) == {
        "event_id": "VARCHAR(36)", "courier_id": "VARCHAR(64)", "lat": "DOUBLE PRECISION",
        "lon": "DOUBLE PRECISION", "recorded_at": "TIMESTAMP", "received_at": "TIMESTAMP",
        "accuracy_m": "DOUBLE PRECISION", "speed_mps": "DOUBLE PRECISION",
        "heading_deg": "DOUBLE PRECISION", "order_id": "VARCHAR(64)", "event_date": "DATE",
        "loaded_at": "TIMESTAMP",
    }  # fmt: skip


def test_redshift_ddl_distributes_by_courier_and_sorts_by_time():
    ddl = " ".join((SQL_DIR / "create_tables.sql").read_text().split())
    assert re.search(r"CREATE TABLE IF NOT EXISTS positions \(.*?\) DISTSTYLE KEY DISTKEY \(courier_id\) SORTKEY \(recorded_at\);", ddl)


def test_merge_writes_its_insert_column_list():
    merges = [e for e in sqlglot.parse(render(SQL_DIR / "merge_positions.sql"), read="redshift") if isinstance(e, exp.Merge)]
    assert len(merges) == 1
    inserts = list(merges[0].find_all(exp.Insert))
    assert inserts and inserts[0].this.expressions, "INSERT column list is missing"


# --- against PostgreSQL --------------------------------------------------------------------------

def haversine_km(lat1, lon1, lat2, lon2):
    r = 6371.0088
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(min(1.0, a)))


def run_file(conn, path, **extra):
    conn.execute(render(path, courier_local_mode=lambda: True, **extra))


def stage(conn, rows, runs=()):
    conn.execute("TRUNCATE positions_staging")
    conn.execute("TRUNCATE compactor_runs_staging")
    for r in runs:
        conn.execute(hourly.RUNS_STAGING_INSERT, (r["table_version"], r["run"], r["rows_written"], r["files_added"], r["manifest"]))
    with conn.cursor().copy(f"COPY positions_staging ({', '.join(hourly.PARQUET_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def row(event_id, courier, lat, lon, recorded_at, speed=None):
    return (event_id, courier, lat, lon, recorded_at, recorded_at + timedelta(seconds=1), 5.0, speed, 90.0, None)


def first_row(conn, path, **extra):
    return conn.execute(render(path, **extra)).fetchone()


def test_postgres_pipeline_sql_merges_and_refreshes_gold(pg_database):
    day1, day2 = datetime(2026, 11, 23, 23, 50), datetime(2026, 11, 24, 0, 10)
    batch1 = [
        row("e1", "c1", -23.56, -46.65, day1, 8.0),
        row("e2", "c1", -23.57, -46.66, day1 + timedelta(minutes=5), 6.0),
        row("e3", "c1", -23.58, -46.64, day2, None),  # next day: its own courier_daily row
        row("e4", "c2", -23.50, -46.60, day2 + timedelta(minutes=1), 3.0),
        row("e4", "c2", -23.50, -46.60, day2 + timedelta(minutes=1), 3.0),  # duplicate in one load
    ]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        run_file(conn, SQL_DIR / "postgres" / "create_tables.sql")
        run_file(conn, SQL_DIR / "postgres" / "create_tables.sql")  # idempotent
        stage(conn, batch1, SAMPLE_RUNS[:2])
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql") == (5,)
        assert all(first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql"))
        assert all(first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql"))
        run_file(conn, SQL_DIR / "merge_positions.sql")
        assert all(first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql"))
        assert conn.execute("SELECT COUNT(*) FROM gold_dirty_dates").fetchone() == (2,)
        # The merged runs are recorded in the same transaction: the high-water mark.
        assert conn.execute("SELECT table_version, compactor_run, rows_written, manifest FROM compactor_loads"
                            " ORDER BY 1").fetchall() == [(7, 6, 120, SAMPLE_RUNS[0]["manifest"]), (8, 7, 0, None)]
        run_file(conn, SQL_DIR / "merge_positions.sql")  # a retried MERGE records nothing twice
        assert conn.execute("SELECT COUNT(*) FROM compactor_loads").fetchone() == (2,)
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM gold_dirty_dates").fetchone() == (0,)

        facts = conn.execute("SELECT event_id, event_date FROM positions ORDER BY event_id").fetchall()
        assert facts == [("e1", date(2026, 11, 23)), ("e2", date(2026, 11, 23)), ("e3", date(2026, 11, 24)), ("e4", date(2026, 11, 24))]
        daily = conn.execute(
            "SELECT event_date, courier_id, positions, first_seen_at, last_seen_at, distance_km, avg_speed_mps"
            " FROM courier_daily ORDER BY event_date, courier_id"
        ).fetchall()
        assert [d[:5] for d in daily] == [
            (date(2026, 11, 23), "c1", 2, day1, day1 + timedelta(minutes=5)),
            (date(2026, 11, 24), "c1", 1, day2, day2),
            (date(2026, 11, 24), "c2", 1, day2 + timedelta(minutes=1), day2 + timedelta(minutes=1)),
        ]
        assert daily[0][5] == pytest.approx(haversine_km(-23.56, -46.65, -23.57, -46.66), rel=1e-9)
        assert daily[0][6] == pytest.approx(7.0)
        assert daily[1][5] == 0 and daily[1][6] is None
        hourly_rows = conn.execute("SELECT event_hour, active_couriers, positions FROM positions_hourly ORDER BY 1").fetchall()
        assert hourly_rows == [(datetime(2026, 11, 23, 23), 1, 2), (datetime(2026, 11, 24, 0), 2, 2)]

        # A second load: one repeat (e2) and a later position of c1 on day 1.
        stage(conn, [row("e2", "c1", -23.57, -46.66, day1 + timedelta(minutes=5), 6.0),
                     row("e5", "c1", -23.59, -46.67, day1 + timedelta(minutes=8), 10.0)], SAMPLE_RUNS[2:])
        run_file(conn, SQL_DIR / "merge_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM positions").fetchone() == (5,)
        assert conn.execute("SELECT MAX(table_version) FROM compactor_loads").fetchone() == (9,)
        d1 = conn.execute("SELECT positions, distance_km, avg_speed_mps FROM courier_daily WHERE event_date = '2026-11-23'").fetchone()
        expected = haversine_km(-23.56, -46.65, -23.57, -46.66) + haversine_km(-23.57, -46.66, -23.59, -46.67)
        assert d1[0] == 3 and d1[1] == pytest.approx(expected, rel=1e-9) and d1[2] == pytest.approx(8.0)
        # Day 2 was not touched by the second load: refreshed once only.
        snapshot = conn.execute("SELECT * FROM courier_daily ORDER BY 1, 2").fetchall()
        run_file(conn, SQL_DIR / "refresh_gold.sql")  # nothing queued: nothing changes
        assert conn.execute("SELECT * FROM courier_daily ORDER BY 1, 2").fetchall() == snapshot

        fresh = dict(data_interval_end=datetime(2026, 11, 24, 2))
        assert first_row(conn, SQL_DIR / "checks" / "fact_freshness.sql", **fresh) == (1,)
        stale = dict(data_interval_end=datetime(2026, 11, 24, 4))
        assert first_row(conn, SQL_DIR / "checks" / "fact_freshness.sql", **stale) == (0,)

        # As the maintenance DAG runs it: one statement at a time, autocommit.
        for statement in statements(render(SQL_DIR / "maintenance.sql")):
            conn.execute(statement)


def test_postgres_checks_pass_on_an_empty_staging_table(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        run_file(conn, SQL_DIR / "postgres" / "create_tables.sql")
        assert first_row(conn, SQL_DIR / "checks" / "staging_row_count.sql") == (0,)
        assert first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql") == (1, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql") == (1, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql") == (1,)
        run_file(conn, SQL_DIR / "merge_positions.sql")
        run_file(conn, SQL_DIR / "refresh_gold.sql")
        assert conn.execute("SELECT COUNT(*) FROM positions").fetchone() == (0,)


def test_postgres_checks_catch_bad_rows(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        run_file(conn, SQL_DIR / "postgres" / "create_tables.sql")
        now = datetime(2026, 11, 24, 10)
        stage(conn, [row(None, "c1", 1.0, 2.0, now), row("e2", "c1", 91.0, 2.0, now)])
        assert first_row(conn, SQL_DIR / "checks" / "staging_no_null_keys.sql") == (0, 1, 1)
        assert first_row(conn, SQL_DIR / "checks" / "staging_coordinates_in_range.sql") == (0, 1, 1)
        # Redshift does not enforce primary keys: simulate a duplicate without one.
        conn.execute("ALTER TABLE positions DROP CONSTRAINT positions_pkey")
        for _ in range(2):
            conn.execute("INSERT INTO positions (event_id, courier_id, lat, lon, recorded_at, received_at, event_date)"
                         " VALUES ('e2', 'c1', 1, 2, %s, %s, %s)", (now, now, now.date()))
        assert first_row(conn, SQL_DIR / "checks" / "fact_no_duplicate_event_ids.sql") == (0,)
