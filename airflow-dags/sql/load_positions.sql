-- Insert the positions this DAG run ({{ run_id }}) staged into the fact table, and record
-- each compactor run in load_ledger, in one transaction (Redshift and PostgreSQL 15+).
--
-- * Only this DAG run's staging rows, of compactor runs not in load_ledger yet: a
--   concurrent or earlier run that loaded the same compactor runs first wins; LOCK
--   serialises loads, so two runs cannot both pass that test.
-- * Insert-only, first copy wins: a staged event_id already in positions is skipped
--   (late duplicate), and within the batch the copy of the oldest compactor run (then
--   the earliest received_at) is kept. The lookup of existing event ids is bounded by
--   the batch's recorded_at range and joins on courier_id, the distribution key of
--   positions: its cost follows the batch, not the history. (A repeated event_id
--   carries the same courier and device time: producers retry the same payload.)
-- * The ledger's counts are computed independently: rows_staged from staging,
--   rows_inserted from positions (by table_version, within the batch's range), the
--   skipped ones from the lookup; the reconcile task checks the identities.
BEGIN;

LOCK courier.load_ledger;

CREATE TEMP TABLE load_runs AS
SELECT r.*
FROM courier_staging.compactor_runs_staging AS r
WHERE r.dag_run_id = '{{ run_id | replace("'", "''") }}'
    AND r.table_version NOT IN (SELECT l.table_version FROM courier.load_ledger AS l);

CREATE TEMP TABLE load_staged AS
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
    s.table_version,
    ROW_NUMBER() OVER (
        PARTITION BY s.event_id ORDER BY s.table_version, s.received_at, s.recorded_at
    ) AS copy_rank
FROM courier_staging.positions_staging AS s
WHERE s.dag_run_id = '{{ run_id | replace("'", "''") }}'
    AND s.table_version IN (SELECT lr.table_version FROM load_runs AS lr);

CREATE TEMP TABLE load_bounds AS
SELECT
    MIN(st.recorded_at) AS min_recorded_at,
    MAX(st.recorded_at) AS max_recorded_at
FROM load_staged AS st;

CREATE TEMP TABLE load_existing AS
SELECT DISTINCT
    p.event_id,
    p.courier_id
FROM courier.positions AS p
INNER JOIN load_bounds AS b
    ON p.recorded_at BETWEEN b.min_recorded_at AND b.max_recorded_at
INNER JOIN load_staged AS st
    ON p.courier_id = st.courier_id AND p.event_id = st.event_id;

INSERT INTO courier.positions (
    event_id, courier_id, lat, lon, recorded_at, received_at,
    accuracy_m, speed_mps, heading_deg, order_id, event_date, table_version
)
SELECT
    st.event_id, st.courier_id, st.lat, st.lon, st.recorded_at, st.received_at,
    st.accuracy_m, st.speed_mps, st.heading_deg, st.order_id,
    CAST(st.recorded_at AS DATE), st.table_version
FROM load_staged AS st
LEFT JOIN load_existing AS e
    ON st.courier_id = e.courier_id AND st.event_id = e.event_id
WHERE st.copy_rank = 1 AND e.event_id IS NULL;

INSERT INTO courier_staging.gold_dirty_dates (event_date)
SELECT DISTINCT CAST(st.recorded_at AS DATE) AS event_date
FROM load_staged AS st
WHERE CAST(st.recorded_at AS DATE) NOT IN (SELECT d.event_date FROM courier_staging.gold_dirty_dates AS d);

INSERT INTO courier.load_ledger (
    table_version, compactor_run, dag_run_id, records_read, positions_decoded,
    duplicates_dropped, dead_lettered, rows_written, files_added, manifest,
    rows_staged, rows_inserted, late_duplicates_skipped, batch_duplicates_skipped,
    min_recorded_at, max_recorded_at, erased_skipped
)
SELECT
    r.table_version,
    r.compactor_run,
    r.dag_run_id,
    r.records_read,
    r.positions_decoded,
    r.duplicates_dropped,
    r.dead_lettered,
    r.rows_written,
    r.files_added,
    r.manifest,
    COALESCE(staged.rows_staged, 0),
    COALESCE(inserted.rows_inserted, 0),
    COALESCE(staged.late_duplicates, 0),
    COALESCE(staged.batch_duplicates, 0),
    staged.min_recorded_at,
    staged.max_recorded_at,
    r.erased_skipped
FROM load_runs AS r
LEFT JOIN (
    SELECT
        st.table_version,
        COUNT(*) AS rows_staged,
        SUM(CASE WHEN st.copy_rank = 1 AND e.event_id IS NOT NULL THEN 1 ELSE 0 END) AS late_duplicates,
        SUM(CASE WHEN st.copy_rank > 1 THEN 1 ELSE 0 END) AS batch_duplicates,
        MIN(st.recorded_at) AS min_recorded_at,
        MAX(st.recorded_at) AS max_recorded_at
    FROM load_staged AS st
    LEFT JOIN load_existing AS e
        ON st.courier_id = e.courier_id AND st.event_id = e.event_id
    GROUP BY st.table_version
) AS staged ON r.table_version = staged.table_version
LEFT JOIN (
    SELECT
        p.table_version,
        COUNT(*) AS rows_inserted
    FROM courier.positions AS p
    INNER JOIN load_bounds AS b
        ON p.recorded_at BETWEEN b.min_recorded_at AND b.max_recorded_at
    WHERE p.table_version IN (SELECT lr.table_version FROM load_runs AS lr)
    GROUP BY p.table_version
) AS inserted ON r.table_version = inserted.table_version;

-- The same per UTC date (the daily lake-versus-warehouse check adds them up by date).
INSERT INTO courier.load_ledger_dates (table_version, event_date, rows_staged, rows_inserted, duplicates_skipped)
SELECT
    staged.table_version,
    staged.event_date,
    staged.rows_staged,
    COALESCE(inserted.rows_inserted, 0),
    staged.duplicates_skipped
FROM (
    SELECT
        st.table_version,
        CAST(st.recorded_at AS DATE) AS event_date,
        COUNT(*) AS rows_staged,
        SUM(CASE WHEN st.copy_rank > 1 OR e.event_id IS NOT NULL THEN 1 ELSE 0 END) AS duplicates_skipped
    FROM load_staged AS st
    LEFT JOIN load_existing AS e
        ON st.courier_id = e.courier_id AND st.event_id = e.event_id
    GROUP BY st.table_version, CAST(st.recorded_at AS DATE)
) AS staged
LEFT JOIN (
    SELECT
        p.table_version,
        p.event_date,
        COUNT(*) AS rows_inserted
    FROM courier.positions AS p
    INNER JOIN load_bounds AS b
        ON p.recorded_at BETWEEN b.min_recorded_at AND b.max_recorded_at
    WHERE p.table_version IN (SELECT lr.table_version FROM load_runs AS lr)
    GROUP BY p.table_version, p.event_date
) AS inserted ON staged.table_version = inserted.table_version AND staged.event_date = inserted.event_date;

DROP TABLE load_existing;

DROP TABLE load_bounds;

DROP TABLE load_staged;

DROP TABLE load_runs;

COMMIT;
