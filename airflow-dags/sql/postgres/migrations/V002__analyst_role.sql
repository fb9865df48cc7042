-- Migration V002 (PostgreSQL): the analyst role, as in ../../migrations/V002; roles
-- are cluster-wide in PostgreSQL, so it is created only when missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'courier_analyst') THEN
        CREATE ROLE courier_analyst NOLOGIN;
    END IF;
END
$$;

GRANT SELECT ON TABLE positions, courier_daily, positions_hourly, load_ledger TO courier_analyst;
