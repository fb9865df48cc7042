-- The warehouse tiers of the retention policy (courier_positions_maintenance,
-- retention_warehouse), one file for Redshift and PostgreSQL. The task runs these
-- statements in one transaction and counts the rows each one deleted; a second run
-- deletes nothing. Cutoffs are UTC dates computed once per DAG run
-- (courier_common.retention_policy): a row is expired when its event_date is before
-- the cutoff of its tier.
--
-- Kept on purpose: courier.load_ledger and courier.load_ledger_dates (counts, no
-- position; MAX(load_ledger.table_version) is the hourly load's high-water mark, so
-- deleting ledger rows would load expired runs again), and the staging tables (the
-- load empties them of rows older than two days).

-- Raw positions before the raw cutoff (today - warehouse_raw_retention_days). The
-- recorded_at bound selects the same rows (event_date is the UTC date of recorded_at)
-- and lets Redshift skip blocks by the sort key.
DELETE FROM courier.positions
WHERE
    event_date < CAST('{{ raw_cutoff }}' AS DATE)
    AND recorded_at < CAST('{{ raw_cutoff }}' AS TIMESTAMP);

-- Gold rows before the gold cutoff (today - gold_retention_days).
DELETE FROM courier_gold.courier_daily
WHERE event_date < CAST('{{ gold_cutoff }}' AS DATE);

DELETE FROM courier_gold.positions_hourly
WHERE event_date < CAST('{{ gold_cutoff }}' AS DATE);
