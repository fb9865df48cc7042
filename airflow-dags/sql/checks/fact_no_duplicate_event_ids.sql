-- SQLCheckOperator: no event_id twice in the fact table on the dates this
-- DAG run staged (Redshift does not enforce primary keys).
SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END AS no_duplicate_event_ids
FROM (
    SELECT p.event_id
    FROM courier.positions AS p
    WHERE p.event_date IN (SELECT DISTINCT CAST(s.recorded_at AS DATE) FROM courier_staging.positions_staging AS s
        WHERE s.dag_run_id = '{{ run_id | replace("'", "''") }}')
    GROUP BY p.event_id
    HAVING COUNT(*) > 1
) AS duplicates;
