-- Recompute the gold tables for every date a load touched (gold_dirty_dates),
-- delete-then-insert in one transaction: idempotent, and a date whose refresh
-- failed stays queued for the next one. Redshift and PostgreSQL.
BEGIN;

CREATE TEMP TABLE gold_refresh_dates AS
SELECT event_date FROM gold_dirty_dates;

DELETE FROM courier_daily
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

-- Per courier per day: distance = sum of haversine distances (mean Earth
-- radius 6371.0088 km) between consecutive positions ordered by recorded_at
-- (event_id breaks ties), within the day.
INSERT INTO courier_daily (
    event_date, courier_id, positions, first_seen_at, last_seen_at, distance_km, avg_speed_mps
)
SELECT
    event_date,
    courier_id,
    COUNT(*) AS positions,
    MIN(recorded_at) AS first_seen_at,
    MAX(recorded_at) AS last_seen_at,
    COALESCE(SUM(
        CASE WHEN prev_lat IS NULL THEN 0
        ELSE 2 * 6371.0088 * ASIN(SQRT(LEAST(1.0,
            POWER(SIN(RADIANS(lat - prev_lat) / 2), 2)
            + COS(RADIANS(prev_lat)) * COS(RADIANS(lat))
              * POWER(SIN(RADIANS(lon - prev_lon) / 2), 2)
        )))
        END
    ), 0) AS distance_km,
    AVG(speed_mps) AS avg_speed_mps
FROM (
    SELECT
        p.event_date,
        p.courier_id,
        p.recorded_at,
        p.lat,
        p.lon,
        p.speed_mps,
        LAG(p.lat) OVER (PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id) AS prev_lat,
        LAG(p.lon) OVER (PARTITION BY p.courier_id, p.event_date ORDER BY p.recorded_at, p.event_id) AS prev_lon
    FROM positions AS p
    WHERE p.event_date IN (SELECT event_date FROM gold_refresh_dates)
) AS steps
GROUP BY event_date, courier_id;

DELETE FROM positions_hourly
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

INSERT INTO positions_hourly (event_hour, event_date, active_couriers, positions)
SELECT
    DATE_TRUNC('hour', p.recorded_at) AS event_hour,
    p.event_date,
    COUNT(DISTINCT p.courier_id) AS active_couriers,
    COUNT(*) AS positions
FROM positions AS p
WHERE p.event_date IN (SELECT event_date FROM gold_refresh_dates)
GROUP BY DATE_TRUNC('hour', p.recorded_at), p.event_date;

DELETE FROM gold_dirty_dates
WHERE event_date IN (SELECT event_date FROM gold_refresh_dates);

DROP TABLE gold_refresh_dates;

COMMIT;
