-- Erase the couriers of erasure request {{ request_id }} from the warehouse (Redshift and
-- PostgreSQL): their rows in courier.positions and in staging, their courier_daily gold
-- rows, and the positions_hourly gold rows recomputed for the hours that held them; the
-- load ledger adjusted per event_date so the daily lake-versus-warehouse check still
-- reconciles; the tier recorded in courier.erasure_tiers. The DAG (courier_erasure.py,
-- erase_warehouse) runs these statements in ONE transaction after `LOCK
-- courier.load_ledger` and its checks (the tier is not done yet; every compactor run
-- committed before the erase commit is loaded, so no older manifest can bring the rows
-- back): the removal and its ledger row commit together or not at all.
--
-- The erase commits (table versions {{ erase_versions | join(", ") }}: usually one; another
-- when a compactor run committed the couriers' rows while the erasure ran) are entered in
-- courier.load_ledger (compactor_run 0, every count 0) so that the high-water mark and the
-- daily check count the lake after them, and courier.load_ledger_dates gets per event_date
-- an adjustment under the last one ({{ erase_version }}): rows_staged -(lake rows removed
-- by all of them), rows_inserted -(warehouse rows removed), duplicates_skipped -(the
-- difference: late copies of the couriers' positions the lake held and the load skipped).
CREATE TEMP TABLE erasure_targets AS
SELECT e.courier_id
FROM courier.erasure_couriers AS e
WHERE e.request_id = '{{ request_id | replace("'", "''") }}';

CREATE TEMP TABLE erasure_removed AS
SELECT
    p.event_date,
    DATE_TRUNC('hour', p.recorded_at) AS event_hour,
    COUNT(*) AS rows_removed
FROM courier.positions AS p
WHERE p.courier_id IN (SELECT t.courier_id FROM erasure_targets AS t)
GROUP BY p.event_date, DATE_TRUNC('hour', p.recorded_at);

CREATE TEMP TABLE erasure_counts AS
SELECT
    (SELECT COALESCE(SUM(r.rows_removed), 0) FROM erasure_removed AS r) AS positions_removed,
    (
        SELECT COUNT(*) FROM courier_staging.positions_staging AS s
        WHERE s.courier_id IN (SELECT t.courier_id FROM erasure_targets AS t)
    ) AS staging_removed,
    (
        SELECT COUNT(*) FROM courier_gold.courier_daily AS d
        WHERE d.courier_id IN (SELECT t.courier_id FROM erasure_targets AS t)
    ) AS courier_daily_removed,
    (SELECT COUNT(DISTINCT r.event_hour) FROM erasure_removed AS r) AS hours_recomputed;

DELETE FROM courier.positions
WHERE courier_id IN (SELECT t.courier_id FROM erasure_targets AS t);

DELETE FROM courier_staging.positions_staging
WHERE courier_id IN (SELECT t.courier_id FROM erasure_targets AS t);

DELETE FROM courier_gold.courier_daily
WHERE courier_id IN (SELECT t.courier_id FROM erasure_targets AS t);

-- positions_hourly counts every courier of an hour: recompute the hours that held the
-- erased rows from what courier.positions holds now (an hour left empty is deleted).
CREATE TEMP TABLE erasure_hours AS
SELECT
    h.event_hour,
    COUNT(p.event_id) AS positions,
    COUNT(DISTINCT p.courier_id) AS active_couriers
FROM (SELECT DISTINCT r.event_hour FROM erasure_removed AS r) AS h
LEFT JOIN courier.positions AS p
    ON p.recorded_at >= h.event_hour AND p.recorded_at < h.event_hour + INTERVAL '1 hour'
GROUP BY h.event_hour;

UPDATE courier_gold.positions_hourly
SET
    positions = h.positions,
    active_couriers = h.active_couriers,
    refreshed_at = CAST('{{ now }}' AS TIMESTAMP)
FROM erasure_hours AS h
WHERE positions_hourly.event_hour = h.event_hour AND h.positions > 0;

DELETE FROM courier_gold.positions_hourly
WHERE event_hour IN (SELECT h.event_hour FROM erasure_hours AS h WHERE h.positions = 0);

CREATE TEMP TABLE erasure_lake_dates (
    event_date    DATE   NOT NULL,
    rows_removed  BIGINT NOT NULL
);
{% if lake_dates %}
INSERT INTO erasure_lake_dates (event_date, rows_removed) VALUES
{%- for d, n in lake_dates %}
    ('{{ d }}', {{ n | int }}){{ "," if not loop.last else ";" }}
{%- endfor %}
{% endif %}
{%- if erase_version %}
{%- for v in erase_versions %}
INSERT INTO courier.load_ledger (
    table_version, compactor_run, dag_run_id, records_read, positions_decoded,
    duplicates_dropped, dead_lettered, rows_written, files_added, manifest,
    rows_staged, rows_inserted, late_duplicates_skipped, batch_duplicates_skipped,
    min_recorded_at, max_recorded_at
)
VALUES (
    {{ v | int }}, 0, '{{ run_id | replace("'", "''") }}', 0, 0,
    0, 0, 0, 0, NULL,
    0, 0, 0, 0,
    NULL, NULL
);
{% endfor %}
INSERT INTO courier.load_ledger_dates (table_version, event_date, rows_staged, rows_inserted, duplicates_skipped)
SELECT
    {{ erase_version | int }},
    d.event_date,
    -d.lake_rows,
    -d.warehouse_rows,
    -(d.lake_rows - d.warehouse_rows)
FROM (
    SELECT
        COALESCE(l.event_date, w.event_date) AS event_date,
        COALESCE(l.rows_removed, 0) AS lake_rows,
        COALESCE(w.rows_removed, 0) AS warehouse_rows
    FROM erasure_lake_dates AS l
    FULL OUTER JOIN (
        SELECT
            r.event_date,
            SUM(r.rows_removed) AS rows_removed
        FROM erasure_removed AS r
        GROUP BY r.event_date
    ) AS w ON l.event_date = w.event_date
) AS d;
{% endif %}
INSERT INTO courier.erasure_tiers (request_id, tier, status, rows_removed, detail, dag_run_id)
SELECT
    '{{ request_id | replace("'", "''") }}',
    'warehouse',
    'done',
    c.positions_removed,
    '{"positions": ' || CAST(c.positions_removed AS VARCHAR(20))
    || ', "staging": ' || CAST(c.staging_removed AS VARCHAR(20))
    || ', "courier_daily": ' || CAST(c.courier_daily_removed AS VARCHAR(20))
    || ', "positions_hourly_recomputed": ' || CAST(c.hours_recomputed AS VARCHAR(20))
    || ', "erase_version": {{ erase_version | int if erase_version else "null" }}}',
    '{{ run_id | replace("'", "''") }}'
FROM erasure_counts AS c;

DROP TABLE erasure_lake_dates;

DROP TABLE erasure_hours;

DROP TABLE erasure_counts;

DROP TABLE erasure_removed;

DROP TABLE erasure_targets;
