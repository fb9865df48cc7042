-- Recompute the gold tables for every date a load touched (gold_dirty_dates),
-- delete-then-insert in one transaction: idempotent, and a date whose refresh
-- failed stays queued for the next one. Redshift and PostgreSQL.
BEGIN;

CREATE TEMP TABLE gold_refresh_dates AS
SELECT event_date FROM courier_staging.gold_dirty_dates;

DELETE FROM courier_gold.courier_daily
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

-- Per courier per day (UTC date). distance_km: the haversine distances (mean Earth
-- radius 6371.0088 km) between consecutive positions of the courier on that day,
-- ordered by recorded_at (event_id breaks ties), counting only real movement. A
-- step does not count when
--   * it is shorter than the fixes' accuracy (the larger accuracy_m of the two:
--     GPS jitter of a courier standing still),
--   * it implies a speed above {{ courier_setting('gold_max_speed_mps') }} m/s (gold_max_speed_mps: a bad fix),
--   * it spans a gap longer than {{ courier_setting('gold_max_gap_minutes') }} minutes (gold_max_gap_minutes: the
--     device was off; the straight line would invent a route), or no time at all.
-- is_final: no more late data is expected for the day: its end is more than
-- {{ courier_setting('gold_final_after_hours') }} hours (gold_final_after_hours) before this refresh.
INSERT INTO courier_gold.courier_daily (
    event_date, courier_id, positions, first_seen_at, last_seen_at, distance_km, avg_speed_mps,
    steps_counted, steps_ignored, is_final
)
SELECT
    event_date,
    courier_id,
    COUNT(*) AS positions,
    MIN(recorded_at) AS first_seen_at,
    MAX(recorded_at) AS last_seen_at,
    COALESCE(SUM(CASE WHEN counts = 1 THEN step_km ELSE 0 END), 0) AS distance_km,
    AVG(speed_mps) AS avg_speed_mps,
    SUM(counts) AS steps_counted,
    SUM(CASE WHEN step_km IS NOT NULL AND counts = 0 THEN 1 ELSE 0 END) AS steps_ignored,
    MAX(CASE
        WHEN CAST(event_date AS TIMESTAMP) + INTERVAL '1 day'
            + INTERVAL '{{ courier_setting('gold_final_after_hours') | int }} hours'
            <= CAST('{{ courier_utcnow().strftime("%Y-%m-%d %H:%M:%S") }}' AS TIMESTAMP)
        THEN 1 ELSE 0 END) = 1 AS is_final
FROM (
    SELECT
        event_date,
        courier_id,
        recorded_at,
        speed_mps,
        step_km,
        CASE
            WHEN step_km IS NULL OR step_seconds <= 0 THEN 0
            WHEN step_seconds > {{ courier_setting('gold_max_gap_minutes') | float }} * 60 THEN 0
            WHEN step_km * 1000 < GREATEST(COALESCE(accuracy_m, 0), COALESCE(prev_accuracy_m, 0)) THEN 0
            WHEN step_km * 1000 / step_seconds > {{ courier_setting('gold_max_speed_mps') | float }} THEN 0
            ELSE 1
        END AS counts
    FROM (
        SELECT
            event_date,
            courier_id,
            recorded_at,
            speed_mps,
            accuracy_m,
            prev_accuracy_m,
            EXTRACT(EPOCH FROM recorded_at) - EXTRACT(EPOCH FROM prev_recorded_at) AS step_seconds,
            CASE WHEN prev_lat IS NULL THEN NULL
            ELSE 2 * 6371.0088 * ASIN(SQRT(LEAST(1.0,
                POWER(SIN(RADIANS(lat - prev_lat) / 2), 2)
                + COS(RADIANS(prev_lat)) * COS(RADIANS(lat))
                  * POWER(SIN(RADIANS(lon - prev_lon) / 2), 2)
            )))
            END AS step_km
        FROM (
            SELECT
                p.event_date,
                p.courier_id,
                p.recorded_at,
                p.lat,
                p.lon,
                p.speed_mps,
                p.accuracy_m,
                LAG(p.lat) OVER (PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id) AS prev_lat,
                LAG(p.lon) OVER (PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id) AS prev_lon,
                LAG(p.recorded_at) OVER (
                    PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id
                ) AS prev_recorded_at,
                LAG(p.accuracy_m) OVER (
                    PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id
                ) AS prev_accuracy_m
            FROM courier.positions AS p
            WHERE p.event_date IN (SELECT event_date FROM gold_refresh_dates)
        ) AS fixes
    ) AS steps
) AS judged
GROUP BY event_date, courier_id;

DELETE FROM courier_gold.positions_hourly
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

-- local_hour / local_date: the hour in the configured time zone
-- ({{ courier_setting('gold_timezone') }}, gold_timezone), beside the UTC one.
INSERT INTO courier_gold.positions_hourly (event_hour, event_date, local_hour, local_date, active_couriers, positions)
SELECT
    DATE_TRUNC('hour', p.recorded_at) AS event_hour,
    p.event_date,
    (DATE_TRUNC('hour', p.recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE '{{ courier_setting('gold_timezone') }}'
        AS local_hour,
    CAST((DATE_TRUNC('hour', p.recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE '{{ courier_setting('gold_timezone') }}'
        AS DATE) AS local_date,
    COUNT(DISTINCT p.courier_id) AS active_couriers,
    COUNT(*) AS positions
FROM courier.positions AS p
WHERE p.event_date IN (SELECT event_date FROM gold_refresh_dates)
GROUP BY 1, 2, 3, 4;

DELETE FROM courier_staging.gold_dirty_dates
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

DROP TABLE gold_refresh_dates;

COMMIT;
