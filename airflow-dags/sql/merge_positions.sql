-- Upsert the staged runs into the fact table on event_id (Redshift and
-- PostgreSQL 15+). event_date is derived from recorded_at (UTC date): it is a
-- Delta partition column, absent from the Parquet files. The source is
-- deduplicated first (Redshift's MERGE rejects a source with repeated match
-- keys; the compactor's dedup window is the first line of defence, this is
-- the second). The touched dates are queued for the gold refresh in the same
-- transaction, and so are the staged compactor runs
-- (compactor_runs_staging) in compactor_loads.
BEGIN;

CREATE TEMP TABLE positions_merge_source AS
SELECT
    event_id,
    courier_id,
    lat,
    lon,
    recorded_at,
    received_at,
    accuracy_m,
    speed_mps,
    heading_deg,
    order_id,
    CAST(recorded_at AS DATE) AS event_date
FROM (
    SELECT
        s.event_id,
        s.courier_id,
        s.lat,
        s.lon,
        s.recorded_at,
        s.received_at,
        s.accuracy_m,
        s.speed_mps,
        s.heading_deg,
        s.order_id,
        ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.received_at, s.recorded_at) AS copy_rank
    FROM positions_staging AS s
) AS ranked
WHERE copy_rank = 1;

MERGE INTO positions
USING positions_merge_source AS src
ON positions.event_id = src.event_id
WHEN MATCHED THEN UPDATE SET
    courier_id = src.courier_id,
    lat = src.lat,
    lon = src.lon,
    recorded_at = src.recorded_at,
    received_at = src.received_at,
    accuracy_m = src.accuracy_m,
    speed_mps = src.speed_mps,
    heading_deg = src.heading_deg,
    order_id = src.order_id,
    event_date = src.event_date
WHEN NOT MATCHED THEN INSERT (
    event_id, courier_id, lat, lon, recorded_at, received_at,
    accuracy_m, speed_mps, heading_deg, order_id, event_date
) VALUES (
    src.event_id, src.courier_id, src.lat, src.lon, src.recorded_at, src.received_at,
    src.accuracy_m, src.speed_mps, src.heading_deg, src.order_id, src.event_date
);

INSERT INTO gold_dirty_dates (event_date)
SELECT DISTINCT src.event_date
FROM positions_merge_source AS src
WHERE src.event_date NOT IN (SELECT d.event_date FROM gold_dirty_dates AS d);

-- Record the merged runs: the high-water mark moves with the data, in the
-- same transaction (a retried MERGE of the same runs inserts nothing twice).
INSERT INTO compactor_loads (table_version, compactor_run, rows_written, files_added, manifest)
SELECT r.table_version, r.compactor_run, r.rows_written, r.files_added, r.manifest
FROM compactor_runs_staging AS r
WHERE r.table_version NOT IN (SELECT l.table_version FROM compactor_loads AS l);

DROP TABLE positions_merge_source;

COMMIT;
