-- Warehouse tables of the courier position pipeline (Redshift dialect).
-- The PostgreSQL variant (local mode, tests) is postgres/create_tables.sql: the
-- same tables and columns without DISTKEY/SORTKEY/DISTSTYLE and with a
-- PostgreSQL default for the load timestamps. Idempotent (IF NOT EXISTS).

-- Fact table: one row per position (event_id), types as in the Delta table.
CREATE TABLE IF NOT EXISTS positions (
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
    loaded_at    TIMESTAMP        NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_id)
)
DISTSTYLE KEY
DISTKEY (courier_id)
SORTKEY (recorded_at);

-- COPY target: exactly the ten Parquet columns in the Parquet order (COPY
-- ... FORMAT AS PARQUET matches by position; event_date is a Delta partition
-- column, not in the files). Nullable on purpose: the quality checks, not a
-- failed COPY, report bad keys.
CREATE TABLE IF NOT EXISTS positions_staging (
    event_id     VARCHAR(36),
    courier_id   VARCHAR(64),
    lat          DOUBLE PRECISION,
    lon          DOUBLE PRECISION,
    recorded_at  TIMESTAMP,
    received_at  TIMESTAMP,
    accuracy_m   DOUBLE PRECISION,
    speed_mps    DOUBLE PRECISION,
    heading_deg  DOUBLE PRECISION,
    order_id     VARCHAR(64)
)
DISTSTYLE KEY
DISTKEY (courier_id);

-- Dates whose gold rows must be recomputed: written by the MERGE in its
-- transaction, emptied by the gold refresh in its transaction, so a failed
-- refresh is redone by the next one.
CREATE TABLE IF NOT EXISTS gold_dirty_dates (
    event_date   DATE             NOT NULL,
    PRIMARY KEY (event_date)
)
DISTSTYLE ALL;

-- Gold: one row per courier per day.
CREATE TABLE IF NOT EXISTS courier_daily (
    event_date     DATE             NOT NULL,
    courier_id     VARCHAR(64)      NOT NULL,
    positions      BIGINT           NOT NULL,
    first_seen_at  TIMESTAMP        NOT NULL,
    last_seen_at   TIMESTAMP        NOT NULL,
    distance_km    DOUBLE PRECISION NOT NULL, -- haversine between consecutive positions by recorded_at
    avg_speed_mps  DOUBLE PRECISION,          -- mean of the reported speeds (NULL when none)
    refreshed_at   TIMESTAMP        NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_date, courier_id)
)
DISTSTYLE KEY
DISTKEY (courier_id)
SORTKEY (event_date);

-- Gold: one row per hour.
CREATE TABLE IF NOT EXISTS positions_hourly (
    event_hour       TIMESTAMP NOT NULL, -- UTC, truncated to the hour
    event_date       DATE      NOT NULL,
    active_couriers  BIGINT    NOT NULL,
    positions        BIGINT    NOT NULL,
    refreshed_at     TIMESTAMP NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (event_hour)
)
DISTSTYLE ALL
SORTKEY (event_hour);

-- The compactor runs of the current load (written by load_staging with the
-- staged rows), and the runs already merged into positions: the warehouse's
-- own high-water mark. merge_positions.sql appends the staged runs to
-- compactor_loads in the MERGE's transaction; the DAG loads
-- `compactor runs --after-version <MAX(table_version)>` next time.
CREATE TABLE IF NOT EXISTS compactor_runs_staging (
    table_version  BIGINT        NOT NULL,
    compactor_run  BIGINT        NOT NULL,
    rows_written   BIGINT        NOT NULL,
    files_added    BIGINT        NOT NULL,
    manifest       VARCHAR(1024)           -- NULL: the run added no files
)
DISTSTYLE ALL;

CREATE TABLE IF NOT EXISTS compactor_loads (
    table_version  BIGINT        NOT NULL, -- Delta table version the run committed
    compactor_run  BIGINT        NOT NULL,
    rows_written   BIGINT        NOT NULL,
    files_added    BIGINT        NOT NULL,
    manifest       VARCHAR(1024),
    loaded_at      TIMESTAMP     NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (table_version)
)
DISTSTYLE ALL
SORTKEY (table_version);
