-- Stage the files of the compactor runs the warehouse has not loaded yet (Redshift),
-- oldest first, stamped with this DAG run ({{ run_id }}) and each row's compactor run;
-- record those runs, with their report counts, in compactor_runs_staging. `runs` is
-- the DAG's load plan (runs_to_load); each run with files names its manifest
-- (<manifests>/v<table version, 20 digits>.json), so a retried load reads the same
-- files. A retry first deletes what an earlier try of this DAG run staged (and
-- staging rows older than two days, left by failed runs); rows of other DAG runs are
-- never touched, so concurrent runs (a backfill) cannot mix their batches.
-- COPY ... FORMAT AS PARQUET matches columns by position and loads all or nothing:
-- it loads a temporary table of exactly the ten Parquet columns.
-- Local mode has no COPY from S3: the DAG reads the manifests' Parquet files with
-- pyarrow and streams them into the same table with PostgreSQL's COPY FROM STDIN
-- (courier_positions_hourly.py, _load_local).
DELETE FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}' OR staged_at < DATEADD(DAY, -2, GETDATE());

DELETE FROM courier_staging.compactor_runs_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}' OR staged_at < DATEADD(DAY, -2, GETDATE());

CREATE TEMP TABLE positions_copy (
    event_id     VARCHAR(36),
    courier_id   VARCHAR(64),
    lat          DOUBLE PRECISION,
    lon          DOUBLE PRECISION,
    recorded_at  TIMESTAMP,
    received_at  TIMESTAMP,
    accuracy_m   DOUBLE PRECISION,
    speed_mps    DOUBLE PRECISION,
    heading_deg  DOUBLE PRECISION,
    order_id     VARCHAR(64)
);
{% for r in runs %}
{%- if r.files_added > 0 %}
COPY positions_copy
FROM '{{ r.manifest }}'
IAM_ROLE '{{ iam_role }}'
FORMAT AS PARQUET
MANIFEST;

INSERT INTO courier_staging.positions_staging (
    event_id, courier_id, lat, lon, recorded_at, received_at,
    accuracy_m, speed_mps, heading_deg, order_id, dag_run_id, table_version
)
SELECT
    c.event_id, c.courier_id, c.lat, c.lon, c.recorded_at, c.received_at,
    c.accuracy_m, c.speed_mps, c.heading_deg, c.order_id,
    '{{ run_id | replace("'", "''") }}', {{ r.table_version | int }}
FROM positions_copy AS c;

DELETE FROM positions_copy;
{% endif %}
INSERT INTO courier_staging.compactor_runs_staging (
    dag_run_id, table_version, compactor_run, records_read, positions_decoded,
    duplicates_dropped, dead_lettered, rows_written, files_added, manifest, erased_skipped
)
VALUES (
    '{{ run_id | replace("'", "''") }}', {{ r.table_version | int }}, {{ r.run | int }},
    {{ r.records_read | int }}, {{ r.positions_decoded | int }}, {{ r.duplicates_dropped | int }},
    {{ r.dead_lettered | int }}, {{ r.rows_written | int }}, {{ r.files_added | int }},
    {% if r.manifest %}'{{ r.manifest | replace("'", "''") }}'{% else %}NULL{% endif %},
    {{ r.erased_skipped | default(0) | int }}
);
{% endfor %}
DROP TABLE positions_copy;
