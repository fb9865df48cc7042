-- First start of the compose postgres only (docker-entrypoint-initdb.d): the
-- metadata database of the compose Airflow, next to the warehouse database
-- (POSTGRES_DB, default courier), whose tables 20-courier-tables.sql creates.
CREATE DATABASE airflow;
