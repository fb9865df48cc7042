"""Reads the demo's Delta table and reconciles it with what the API acknowledged.

Usage: demo_summary.py DEMO_DIR TABLE_PATH
Exits 1 when the counts do not reconcile.
"""

import json
import sys

import polars as pl

demo_dir, table = sys.argv[1], sys.argv[2]
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
sys.exit(0 if ok else 1)
