-- SQLCheckOperator: latitude in [-90, 90], longitude in [-180, 180], and the
-- optional measures in the API's ranges.
SELECT
    CASE WHEN COUNT(CASE WHEN lat IS NULL OR lat < -90 OR lat > 90 THEN 1 END) = 0 THEN 1 ELSE 0 END AS lat_in_range,
    CASE WHEN COUNT(CASE WHEN lon IS NULL OR lon < -180 OR lon > 180 THEN 1 END) = 0 THEN 1 ELSE 0 END AS lon_in_range,
    CASE WHEN COUNT(CASE WHEN speed_mps < 0 OR speed_mps > 100 OR heading_deg < 0 OR heading_deg >= 360 OR accuracy_m < 0 THEN 1 END) = 0 THEN 1 ELSE 0 END AS measures_in_range
FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}';
