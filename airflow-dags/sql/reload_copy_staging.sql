-- Stage the lake's rows of the event_dates a courier_reload DAG run ({{ run_id }}) reloads
-- (Redshift): the Parquet files of those partitions active at table version
-- {{ table_version }}, listed in a COPY manifest the DAG wrote ({{ manifest }}), stamped
-- with the DAG run and that version. A retry first deletes what an earlier try staged.
-- COPY ... FORMAT AS PARQUET matches columns by position: a temporary table of exactly
-- the ten Parquet columns. Local mode reads the same files with pyarrow instead
-- (courier_reload.py, stage_local).
DELETE FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}' OR staged_at < DATEADD(DAY, -2, GETDATE());

CREATE TEMP TABLE reload_copy (
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
{% if manifest %}
COPY reload_copy
FROM '{{ manifest }}'
IAM_ROLE '{{ iam_role }}'
FORMAT AS PARQUET
MANIFEST;
{% endif %}
INSERT INTO courier_staging.positions_staging (
    event_id, courier_id, lat, lon, recorded_at, received_at,
    accuracy_m, speed_mps, heading_deg, order_id, dag_run_id, table_version
)
SELECT
    c.event_id, c.courier_id, c.lat, c.lon, c.recorded_at, c.received_at,
    c.accuracy_m, c.speed_mps, c.heading_deg, c.order_id,
    '{{ run_id | replace("'", "''") }}', {{ table_version | default(0) | int }}
FROM reload_copy AS c;

DROP TABLE reload_copy;
