-- Rows this DAG run staged; SQLValueCheckOperator compares it with the rows_written of
-- the compactor runs it staged (lake = staged: they must be equal).
SELECT COUNT(*) AS staged_rows FROM courier_staging.positions_staging
WHERE dag_run_id = '{{ run_id | replace("'", "''") }}';
