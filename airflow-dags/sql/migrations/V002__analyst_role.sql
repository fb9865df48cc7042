-- Migration V002 (Redshift): the analyst role. Analysts read the fact table, the gold
-- tables and the load ledger; staging and queue tables stay internal.
CREATE ROLE courier_analyst;

GRANT SELECT ON TABLE positions, courier_daily, positions_hourly, load_ledger TO ROLE courier_analyst;
