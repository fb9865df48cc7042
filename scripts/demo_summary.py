"""Reads the demo's Delta table (and, given its URL, the warehouse the hourly DAG loaded)
and reconciles them with what the API acknowledged, hop by hop.

Usage: demo_summary.py DEMO_DIR TABLE_PATH [WAREHOUSE_URL]
Exits 1 when the counts do not reconcile.
"""

import json
import os
import sys

import polars as pl

demo_dir, table = sys.argv[1], sys.argv[2]
warehouse = sys.argv[3] if len(sys.argv) > 3 else None
sim = json.load(open(f"{demo_dir}/sim-summary.json"))
stream = json.load(open(f"{demo_dir}/stream-stats.json"))
run = json.load(open(f"{demo_dir}/compactor-report.json"))

df = pl.read_delta(table)
rows = df.height
distinct = df["event_id"].n_unique()

checks = [
    ("positions acknowledged by the API = positions in the stream", sim["accepted"], stream["positions"]),
    (
        "positions in the stream = rows written + duplicates dropped + dead-lettered",
        stream["positions"],
        run["rows_written"] + run["duplicates_dropped"] + run["dead_lettered"],
    ),
    ("rows written by the compactor = rows in the Delta table", run["rows_written"], rows),
    ("rows in the Delta table = distinct event ids (no duplicate)", rows, distinct),
]
if warehouse:
    import psycopg

    with psycopg.connect(warehouse) as conn:
        fact_rows, fact_ids = conn.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM courier.positions").fetchone()
        ledger = conn.execute(
            "SELECT table_version, compactor_run, positions_decoded, duplicates_dropped, dead_lettered, rows_written,"
            " rows_staged, rows_inserted, late_duplicates_skipped + batch_duplicates_skipped"
            " FROM courier.load_ledger ORDER BY table_version"
        ).fetchall()
        gold = conn.execute(
            "SELECT event_date, courier_id, positions, ROUND(CAST(distance_km AS NUMERIC), 2),"
            " ROUND(CAST(avg_speed_mps AS NUMERIC), 1) FROM courier_gold.courier_daily ORDER BY distance_km DESC, courier_id LIMIT 5"
        ).fetchall()
    inserted = sum(r[7] for r in ledger)
    checks += [
        ("compactor runs in the load ledger = compactor runs that committed", len(ledger), 1 if run["committed"] else 0),
        ("rows in the Delta table = rows staged in the warehouse", rows, sum(r[6] for r in ledger)),
        ("rows staged = rows inserted + duplicates skipped", sum(r[6] for r in ledger), inserted + sum(r[8] for r in ledger)),
        ("rows in the Delta table = rows in the warehouse (positions)", rows, fact_rows),
        ("rows in the warehouse = distinct event ids (no duplicate)", fact_rows, fact_ids),
    ]

ok = True
for name, left, right in checks:
    good = left == right
    ok &= good
    print(f"  {'OK ' if good else 'MISMATCH'} {name}: {left} = {right}")

# Distance per courier: haversine between consecutive fixes by device time.
r = 6371.0088
dist = (
    df.sort("courier_id", "recorded_at")
    .with_columns(
        pl.col("lat").radians().alias("p1"),
        pl.col("lon").radians().alias("l1"),
        pl.col("lat").radians().shift(1).over("courier_id").alias("p0"),
        pl.col("lon").radians().shift(1).over("courier_id").alias("l0"),
    )
    .with_columns(
        (
            2
            * r
            * (
                ((pl.col("p1") - pl.col("p0")) / 2).sin().pow(2)
                + pl.col("p0").cos() * pl.col("p1").cos() * ((pl.col("l1") - pl.col("l0")) / 2).sin().pow(2)
            )
            .sqrt()
            .arcsin()
        ).alias("km")
    )
    .group_by("courier_id")
    .agg(
        pl.col("km").sum().round(2).alias("distance_km"),
        pl.len().alias("positions"),
        pl.col("speed_mps").mean().round(1).alias("avg_speed_mps"),
    )
    .sort("distance_km", descending=True)
)
print()
print("Top couriers by distance travelled (haversine between consecutive positions):")
with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
    print(dist.head(5))
print()
print(f"The Delta table is at {table} ({rows} rows, partitioned by event_date). Read it with:")
print(f"  python3 -c \"import polars as pl; print(pl.read_delta('{table}'))\"")
print(f"  (the demo's venv has polars and deltalake: .tools/demo-venv/bin/python)")
print(f"Redshift COPY manifest of this run: {run['manifest']}")
if warehouse:
    print()
    print("Load ledger (warehouse table courier.load_ledger, one row per compactor run, written with the load):")
    header = ("version", "run", "stream", "dups", "dead", "lake", "staged", "inserted", "skipped")
    print("  " + " ".join(f"{h:>9}" for h in header))
    for r in ledger:
        print("  " + " ".join(f"{v:>9}" for v in r))
    print()
    print("Gold table courier_gold.courier_daily, top couriers by distance (haversine km):")
    print(f"  {'event_date':<12}{'courier_id':<16}{'positions':>10}{'km':>10}{'avg m/s':>9}")
    for d, c, n, km, speed in gold:
        print(f"  {str(d):<12}{c:<16}{n:>10}{str(km):>10}{str(speed):>9}")
    print(f"The warehouse: psql {warehouse}")
sys.stdout.flush()
# deltalake may abort while the interpreter exits (facts.md): exit without teardown.
os._exit(0 if ok else 1)
