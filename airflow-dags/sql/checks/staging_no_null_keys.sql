-- SQLCheckOperator: every value of the first row must be true (1); an empty
-- staging table (a run that added nothing) passes.
SELECT
    CASE WHEN COUNT(CASE WHEN event_id IS NULL OR event_id = '' THEN 1 END) = 0 THEN 1 ELSE 0 END AS event_id_present,
    CASE WHEN COUNT(CASE WHEN courier_id IS NULL OR courier_id = '' THEN 1 END) = 0 THEN 1 ELSE 0 END AS courier_id_present,
    CASE WHEN COUNT(CASE WHEN recorded_at IS NULL OR received_at IS NULL THEN 1 END) = 0 THEN 1 ELSE 0 END AS timestamps_present
FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}';
