-- Reload courier.positions for the event_dates {{ start_date }} .. {{ end_date }} from the
-- lake (Redshift and PostgreSQL): the rows the courier_reload DAG run {{ run_id }} staged
-- from the Parquet files of those partitions active at table version {{ table_version }}
-- (the version the warehouse has loaded up to) replace the dates' rows, first copy of an
-- event_id wins (the earliest received_at); the load ledger per date is replaced by one
-- row per date of this version with the lake's rows, the rows inserted (counted in
-- courier.positions) and the copies skipped, so the daily lake-versus-warehouse check
-- reconciles those dates; gold is queued for them; the reload is recorded in
-- courier.reloads. The DAG (courier_reload.py, reload_positions) runs these statements in
-- ONE transaction after `LOCK courier.load_ledger` and a check that the warehouse still
-- stands at table version {{ table_version }}: running it twice gives the same rows.
CREATE TEMP TABLE reload_staged AS
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
    CAST(s.recorded_at AS DATE) AS event_date,
    ROW_NUMBER() OVER (PARTITION BY s.event_id ORDER BY s.received_at, s.recorded_at) AS copy_rank
FROM courier_staging.positions_staging AS s
WHERE s.dag_run_id = '{{ run_id | replace("'", "''") }}'
    AND CAST(s.recorded_at AS DATE) BETWEEN '{{ start_date }}' AND '{{ end_date }}';

DELETE FROM courier.positions
WHERE event_date BETWEEN '{{ start_date }}' AND '{{ end_date }}';

INSERT INTO courier.positions (
    event_id, courier_id, lat, lon, recorded_at, received_at,
    accuracy_m, speed_mps, heading_deg, order_id, event_date, table_version
)
SELECT
    st.event_id, st.courier_id, st.lat, st.lon, st.recorded_at, st.received_at,
    st.accuracy_m, st.speed_mps, st.heading_deg, st.order_id, st.event_date, {{ table_version | default(0) | int }}
FROM reload_staged AS st
WHERE st.copy_rank = 1;

DELETE FROM courier.load_ledger_dates
WHERE event_date BETWEEN '{{ start_date }}' AND '{{ end_date }}';

INSERT INTO courier.load_ledger_dates (table_version, event_date, rows_staged, rows_inserted, duplicates_skipped)
SELECT
    {{ table_version | default(0) | int }},
    staged.event_date,
    staged.rows_staged,
    COALESCE(inserted.rows_inserted, 0),
    staged.duplicates_skipped
FROM (
    SELECT
        st.event_date,
        COUNT(*) AS rows_staged,
        SUM(CASE WHEN st.copy_rank > 1 THEN 1 ELSE 0 END) AS duplicates_skipped
    FROM reload_staged AS st
    GROUP BY st.event_date
) AS staged
LEFT JOIN (
    SELECT
        p.event_date,
        COUNT(*) AS rows_inserted
    FROM courier.positions AS p
    WHERE p.event_date BETWEEN '{{ start_date }}' AND '{{ end_date }}'
    GROUP BY p.event_date
) AS inserted ON staged.event_date = inserted.event_date;

{% if dates -%}
INSERT INTO courier_staging.gold_dirty_dates (event_date)
SELECT d.event_date
FROM (
{%- for d in dates %}
    SELECT CAST('{{ d }}' AS DATE) AS event_date{{ " UNION ALL" if not loop.last else "" }}
{%- endfor %}
) AS d
WHERE d.event_date NOT IN (SELECT q.event_date FROM courier_staging.gold_dirty_dates AS q);
{% endif %}

DELETE FROM courier.reloads
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}';

INSERT INTO courier.reloads (
    dag_run_id, start_date, end_date, table_version, files_read, rows_staged, rows_inserted, duplicates_skipped
)
SELECT
    '{{ run_id | replace("'", "''") }}',
    CAST('{{ start_date }}' AS DATE),
    CAST('{{ end_date }}' AS DATE),
    {{ table_version | default(0) | int }},
    {{ files_read | default(0) | int }},
    (SELECT COUNT(*) FROM reload_staged),
    (
        SELECT COUNT(*) FROM courier.positions AS p
        WHERE p.event_date BETWEEN '{{ start_date }}' AND '{{ end_date }}'
    ),
    (SELECT COUNT(*) FROM reload_staged AS st WHERE st.copy_rank > 1);

DELETE FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}';

DROP TABLE reload_staged;
