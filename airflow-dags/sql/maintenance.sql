-- Daily warehouse maintenance (Redshift and PostgreSQL: the plain forms are
-- valid in both). VACUUM cannot run inside a transaction: run with autocommit.
VACUUM courier.positions;
ANALYZE courier.positions;
VACUUM courier_gold.courier_daily;
ANALYZE courier_gold.courier_daily;
VACUUM courier_gold.positions_hourly;
ANALYZE courier_gold.positions_hourly;
