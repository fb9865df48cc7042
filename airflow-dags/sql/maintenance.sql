-- Daily warehouse maintenance (Redshift and PostgreSQL: the plain forms are
-- valid in both). VACUUM cannot run inside a transaction: run with autocommit.
VACUUM positions;
ANALYZE positions;
VACUUM courier_daily;
ANALYZE courier_daily;
VACUUM positions_hourly;
ANALYZE positions_hourly;
