-- Rows in staging; SQLValueCheckOperator compares it with the rows_written of
-- the compactor run report (they must be equal).
SELECT COUNT(*) AS staged_rows FROM positions_staging;
