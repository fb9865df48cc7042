-- Migration V003 (Redshift): the tables move into three schemas.
--   courier          the fact table `positions` and the load ledger `load_ledger` (analysts read them)
--   courier_gold     the gold tables `courier_daily` and `positions_hourly` (analysts read them)
--   courier_staging  the load's internal tables: `positions_staging`, `compactor_runs_staging`,
--                    `gold_dirty_dates` (analysts do not see this schema)
-- Redshift has no ALTER TABLE ... SET SCHEMA: each table is created in its schema with
-- the same columns, keys and distribution, its rows copied, the old table dropped (its
-- grants and comments go with it: both are declared again below). The same statements
-- in PostgreSQL (local mode) keep the two warehouses alike. One transaction (the
-- migration runner's). schema_migrations stays where the runner creates it.

CREATE SCHEMA IF NOT EXISTS courier;

CREATE SCHEMA IF NOT EXISTS courier_gold;

CREATE SCHEMA IF NOT EXISTS courier_staging;

CREATE TABLE courier.positions (
    event_id     VARCHAR(36)      NOT NULL,
    courier_id   VARCHAR(64)      NOT NULL,
    lat          DOUBLE PRECISION NOT NULL,
    lon          DOUBLE PRECISION NOT NULL,
    recorded_at  TIMESTAMP        NOT NULL, -- UTC
    received_at  TIMESTAMP        NOT NULL, -- UTC
    accuracy_m   DOUBLE PRECISION,
    speed_mps    DOUBLE PRECISION,
    heading_deg  DOUBLE PRECISION,
    order_id     VARCHAR(64),
    event_date   DATE             NOT NULL, -- UTC date of recorded_at
    table_version BIGINT          NOT NULL, -- the compactor run (Delta table version) that loaded it
    loaded_at    TIMESTAMP        NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_id)
)
DISTSTYLE KEY
DISTKEY (courier_id)
SORTKEY (recorded_at);

INSERT INTO courier.positions SELECT * FROM public.positions;

DROP TABLE public.positions;

CREATE TABLE courier_staging.positions_staging (
    event_id     VARCHAR(36),
    courier_id   VARCHAR(64),
    lat          DOUBLE PRECISION,
    lon          DOUBLE PRECISION,
    recorded_at  TIMESTAMP,
    received_at  TIMESTAMP,
    accuracy_m   DOUBLE PRECISION,
    speed_mps    DOUBLE PRECISION,
    heading_deg  DOUBLE PRECISION,
    order_id     VARCHAR(64),
    dag_run_id   VARCHAR(250)     NOT NULL, -- the DAG run that staged it: the load takes only its own
    table_version BIGINT          NOT NULL, -- the compactor run whose files held it
    staged_at    TIMESTAMP        NOT NULL DEFAULT GETDATE()
)
DISTSTYLE KEY
DISTKEY (courier_id);

INSERT INTO courier_staging.positions_staging SELECT * FROM public.positions_staging;

DROP TABLE public.positions_staging;

CREATE TABLE courier_staging.gold_dirty_dates (
    event_date   DATE             NOT NULL,
    PRIMARY KEY (event_date)
)
DISTSTYLE ALL;

INSERT INTO courier_staging.gold_dirty_dates SELECT * FROM public.gold_dirty_dates;

DROP TABLE public.gold_dirty_dates;

CREATE TABLE courier_gold.courier_daily (
    event_date     DATE             NOT NULL,
    courier_id     VARCHAR(64)      NOT NULL,
    positions      BIGINT           NOT NULL,
    first_seen_at  TIMESTAMP        NOT NULL,
    last_seen_at   TIMESTAMP        NOT NULL,
    distance_km    DOUBLE PRECISION NOT NULL, -- haversine between consecutive positions, without jitter, jumps and gaps (refresh_gold.sql)
    avg_speed_mps  DOUBLE PRECISION,          -- mean of the reported speeds (NULL when none)
    steps_counted  BIGINT           NOT NULL, -- steps between consecutive positions counted in distance_km
    steps_ignored  BIGINT           NOT NULL, -- steps left out: jitter, impossible speed, gap
    is_final       BOOLEAN          NOT NULL, -- no more late data expected for the day
    refreshed_at   TIMESTAMP        NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_date, courier_id)
)
DISTSTYLE KEY
DISTKEY (courier_id)
SORTKEY (event_date);

INSERT INTO courier_gold.courier_daily SELECT * FROM public.courier_daily;

DROP TABLE public.courier_daily;

CREATE TABLE courier_gold.positions_hourly (
    event_hour       TIMESTAMP NOT NULL, -- UTC, truncated to the hour
    event_date       DATE      NOT NULL,
    local_hour       TIMESTAMP NOT NULL, -- the same hour in the gold_timezone setting's local time
    local_date       DATE      NOT NULL, -- its local date
    active_couriers  BIGINT    NOT NULL,
    positions        BIGINT    NOT NULL,
    refreshed_at     TIMESTAMP NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_hour)
)
DISTSTYLE ALL
SORTKEY (event_hour);

INSERT INTO courier_gold.positions_hourly SELECT * FROM public.positions_hourly;

DROP TABLE public.positions_hourly;

CREATE TABLE courier_staging.compactor_runs_staging (
    dag_run_id          VARCHAR(250)  NOT NULL,
    table_version       BIGINT        NOT NULL,
    compactor_run       BIGINT        NOT NULL,
    records_read        BIGINT        NOT NULL,
    positions_decoded   BIGINT        NOT NULL,
    duplicates_dropped  BIGINT        NOT NULL,
    dead_lettered       BIGINT        NOT NULL,
    rows_written        BIGINT        NOT NULL,
    files_added         BIGINT        NOT NULL,
    manifest            VARCHAR(1024),          -- NULL: the run added no files
    staged_at           TIMESTAMP     NOT NULL DEFAULT GETDATE()
) DISTSTYLE ALL;

INSERT INTO courier_staging.compactor_runs_staging SELECT * FROM public.compactor_runs_staging;

DROP TABLE public.compactor_runs_staging;

CREATE TABLE courier.load_ledger (
    table_version             BIGINT        NOT NULL,
    compactor_run             BIGINT        NOT NULL,
    dag_run_id                VARCHAR(250)  NOT NULL,
    records_read              BIGINT        NOT NULL,
    positions_decoded         BIGINT        NOT NULL,
    duplicates_dropped        BIGINT        NOT NULL,
    dead_lettered             BIGINT        NOT NULL,
    rows_written              BIGINT        NOT NULL,
    files_added               BIGINT        NOT NULL,
    manifest                  VARCHAR(1024),
    rows_staged               BIGINT        NOT NULL,
    rows_inserted             BIGINT        NOT NULL,
    late_duplicates_skipped   BIGINT        NOT NULL,
    batch_duplicates_skipped  BIGINT        NOT NULL,
    min_recorded_at           TIMESTAMP,
    max_recorded_at           TIMESTAMP,
    loaded_at                 TIMESTAMP     NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (table_version)
)
DISTSTYLE ALL
SORTKEY (table_version);

INSERT INTO courier.load_ledger SELECT * FROM public.load_ledger;

DROP TABLE public.load_ledger;

-- Comments: every table and column (the data dictionary, also in airflow-dags/README.md).
COMMENT ON TABLE courier.positions IS 'Fact table: one row per courier position (event_id), loaded insert-only by the hourly DAG; first copy of an event_id wins.';
COMMENT ON COLUMN courier.positions.event_id IS 'Producer-assigned UUID of the position; unique (the first copy loaded wins).';
COMMENT ON COLUMN courier.positions.courier_id IS 'Courier that reported the position; the distribution key.';
COMMENT ON COLUMN courier.positions.lat IS 'Latitude in degrees (WGS 84), -90 to 90.';
COMMENT ON COLUMN courier.positions.lon IS 'Longitude in degrees (WGS 84), -180 to 180.';
COMMENT ON COLUMN courier.positions.recorded_at IS 'When the device recorded the fix (UTC); the sort key.';
COMMENT ON COLUMN courier.positions.received_at IS 'When ingest-api received it (UTC).';
COMMENT ON COLUMN courier.positions.accuracy_m IS 'Horizontal accuracy reported by the device, metres (NULL: not reported).';
COMMENT ON COLUMN courier.positions.speed_mps IS 'Speed reported by the device, m/s (NULL: not reported).';
COMMENT ON COLUMN courier.positions.heading_deg IS 'Heading reported by the device, degrees from north, 0 to 360 (NULL: not reported).';
COMMENT ON COLUMN courier.positions.order_id IS 'Order the courier was serving, if any.';
COMMENT ON COLUMN courier.positions.event_date IS 'UTC date of recorded_at (the Delta table''s partition).';
COMMENT ON COLUMN courier.positions.table_version IS 'Delta table version of the compactor run that loaded the row (see load_ledger).';
COMMENT ON COLUMN courier.positions.loaded_at IS 'When the row was inserted (UTC).';
COMMENT ON TABLE courier_staging.positions_staging IS 'Staging of the hourly load: the rows of the compactor runs a DAG run is loading, stamped with that DAG run. Internal.';
COMMENT ON COLUMN courier_staging.positions_staging.event_id IS 'As positions.event_id (nullable: checks report bad keys).';
COMMENT ON COLUMN courier_staging.positions_staging.courier_id IS 'As positions.courier_id.';
COMMENT ON COLUMN courier_staging.positions_staging.lat IS 'As positions.lat.';
COMMENT ON COLUMN courier_staging.positions_staging.lon IS 'As positions.lon.';
COMMENT ON COLUMN courier_staging.positions_staging.recorded_at IS 'As positions.recorded_at.';
COMMENT ON COLUMN courier_staging.positions_staging.received_at IS 'As positions.received_at.';
COMMENT ON COLUMN courier_staging.positions_staging.accuracy_m IS 'As positions.accuracy_m.';
COMMENT ON COLUMN courier_staging.positions_staging.speed_mps IS 'As positions.speed_mps.';
COMMENT ON COLUMN courier_staging.positions_staging.heading_deg IS 'As positions.heading_deg.';
COMMENT ON COLUMN courier_staging.positions_staging.order_id IS 'As positions.order_id.';
COMMENT ON COLUMN courier_staging.positions_staging.dag_run_id IS 'Airflow DAG run that staged the row; a load takes only its own rows.';
COMMENT ON COLUMN courier_staging.positions_staging.table_version IS 'Delta table version of the compactor run whose file held the row.';
COMMENT ON COLUMN courier_staging.positions_staging.staged_at IS 'When the row was staged (UTC); rows older than two days are cleaned up.';
COMMENT ON TABLE courier_staging.gold_dirty_dates IS 'Queue of UTC dates whose gold rows must be recomputed (written by the load, emptied by the gold refresh). Internal.';
COMMENT ON COLUMN courier_staging.gold_dirty_dates.event_date IS 'UTC date to recompute.';
COMMENT ON TABLE courier_gold.courier_daily IS 'Gold: one row per courier per UTC day.';
COMMENT ON COLUMN courier_gold.courier_daily.event_date IS 'UTC date.';
COMMENT ON COLUMN courier_gold.courier_daily.courier_id IS 'Courier.';
COMMENT ON COLUMN courier_gold.courier_daily.positions IS 'Positions of the courier that day.';
COMMENT ON COLUMN courier_gold.courier_daily.first_seen_at IS 'First recorded_at of the day (UTC).';
COMMENT ON COLUMN courier_gold.courier_daily.last_seen_at IS 'Last recorded_at of the day (UTC).';
COMMENT ON COLUMN courier_gold.courier_daily.distance_km IS 'Kilometres travelled: haversine steps between consecutive positions, without GPS jitter (step shorter than the fixes'' accuracy), impossible speeds (gold_max_speed_mps) and gaps (gold_max_gap_minutes).';
COMMENT ON COLUMN courier_gold.courier_daily.avg_speed_mps IS 'Mean of the speeds the device reported, m/s (NULL: none reported).';
COMMENT ON COLUMN courier_gold.courier_daily.steps_counted IS 'Steps between consecutive positions counted in distance_km.';
COMMENT ON COLUMN courier_gold.courier_daily.steps_ignored IS 'Steps left out of distance_km (jitter, impossible speed, gap).';
COMMENT ON COLUMN courier_gold.courier_daily.is_final IS 'True when no more late data is expected: the day ended more than gold_final_after_hours before the refresh.';
COMMENT ON COLUMN courier_gold.courier_daily.refreshed_at IS 'When the row was computed (UTC).';
COMMENT ON TABLE courier_gold.positions_hourly IS 'Gold: one row per UTC hour with positions.';
COMMENT ON COLUMN courier_gold.positions_hourly.event_hour IS 'UTC hour (recorded_at truncated to the hour).';
COMMENT ON COLUMN courier_gold.positions_hourly.event_date IS 'UTC date of the hour.';
COMMENT ON COLUMN courier_gold.positions_hourly.local_hour IS 'The same hour in local time (gold_timezone, default America/Sao_Paulo).';
COMMENT ON COLUMN courier_gold.positions_hourly.local_date IS 'Local date of the hour.';
COMMENT ON COLUMN courier_gold.positions_hourly.active_couriers IS 'Couriers with at least one position in the hour.';
COMMENT ON COLUMN courier_gold.positions_hourly.positions IS 'Positions in the hour.';
COMMENT ON COLUMN courier_gold.positions_hourly.refreshed_at IS 'When the row was computed (UTC).';
COMMENT ON TABLE courier_staging.compactor_runs_staging IS 'The compactor runs a DAG run staged, with their report counts. Internal.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.dag_run_id IS 'Airflow DAG run that staged the compactor run.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.table_version IS 'Delta table version the compactor run committed.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.compactor_run IS 'Compactor run number.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.records_read IS 'Stream records the run read.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.positions_decoded IS 'Positions decoded from those records.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.duplicates_dropped IS 'Positions dropped by the compactor as duplicates.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.dead_lettered IS 'Records or positions written to the dead-letter file.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.rows_written IS 'Rows the run wrote to the Delta table.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.files_added IS 'Parquet files the run added.';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.manifest IS 'COPY manifest of those files (NULL: no file).';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.staged_at IS 'When the run was staged (UTC).';
COMMENT ON TABLE courier.load_ledger IS 'One row per compactor run loaded into positions, written in the load''s transaction: the high-water mark and the hop-by-hop reconciliation (stream = lake + duplicates + dead letters; lake = staged; staged = inserted + skipped).';
COMMENT ON COLUMN courier.load_ledger.table_version IS 'Delta table version the compactor run committed.';
COMMENT ON COLUMN courier.load_ledger.compactor_run IS 'Compactor run number.';
COMMENT ON COLUMN courier.load_ledger.dag_run_id IS 'Airflow DAG run that loaded it.';
COMMENT ON COLUMN courier.load_ledger.records_read IS 'Stream records the compactor run read.';
COMMENT ON COLUMN courier.load_ledger.positions_decoded IS 'Positions decoded from the stream (the stream hop).';
COMMENT ON COLUMN courier.load_ledger.duplicates_dropped IS 'Positions the compactor dropped as duplicates.';
COMMENT ON COLUMN courier.load_ledger.dead_lettered IS 'Records or positions the compactor dead-lettered.';
COMMENT ON COLUMN courier.load_ledger.rows_written IS 'Rows written to the Delta table (the lake hop).';
COMMENT ON COLUMN courier.load_ledger.files_added IS 'Parquet files added.';
COMMENT ON COLUMN courier.load_ledger.manifest IS 'COPY manifest (NULL: no file).';
COMMENT ON COLUMN courier.load_ledger.rows_staged IS 'Rows staged in the warehouse for this run.';
COMMENT ON COLUMN courier.load_ledger.rows_inserted IS 'Rows of this run inserted into positions (counted in positions).';
COMMENT ON COLUMN courier.load_ledger.late_duplicates_skipped IS 'Staged rows skipped: their event_id was already in positions.';
COMMENT ON COLUMN courier.load_ledger.batch_duplicates_skipped IS 'Staged rows skipped: a copy of the same event_id from an older run of the same load won.';
COMMENT ON COLUMN courier.load_ledger.min_recorded_at IS 'Earliest recorded_at staged (bounds the duplicate lookup).';
COMMENT ON COLUMN courier.load_ledger.max_recorded_at IS 'Latest recorded_at staged.';
COMMENT ON COLUMN courier.load_ledger.loaded_at IS 'When the run was loaded (UTC).';

-- The analyst role (V002): the fact, gold and ledger tables, through their schemas only.
GRANT USAGE ON SCHEMA courier TO ROLE courier_analyst;

GRANT USAGE ON SCHEMA courier_gold TO ROLE courier_analyst;

GRANT SELECT ON TABLE courier.positions, courier.load_ledger, courier_gold.courier_daily, courier_gold.positions_hourly TO ROLE courier_analyst;
