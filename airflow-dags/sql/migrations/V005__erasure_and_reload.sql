-- Migration V005 (Redshift): the erasure ledger and the reload record (issue 15).
--   courier.erasure_requests  one row per erasure request: who asked it (DAG run), when,
--                             when every tier was done, and by when vacuum deletes the old
--                             lake files that still hold the erased rows
--   courier.erasure_couriers  the couriers of each request
--   courier.erasure_tiers     one row per request and tier done (lake, dead_letters,
--                             warehouse, live_store): rows removed, when, the detail; a
--                             tier with a row here is never done again
--   courier.erasure_status    view: per request, each tier's count and whether it is complete
--   courier.reloads           one row per warehouse reload of an event_date range from the lake
-- Written by the courier_erasure and courier_reload DAGs. The ledger keeps courier ids
-- (the pseudonymous keys the request names) and counts, never a position.
CREATE TABLE courier.erasure_requests (
    request_id       VARCHAR(128)  NOT NULL,
    courier_count    BIGINT        NOT NULL,
    dag_run_id       VARCHAR(250)  NOT NULL, -- the DAG run that registered it
    requested_at     TIMESTAMP     NOT NULL DEFAULT GETDATE(),
    completed_at     TIMESTAMP,              -- NULL: a tier is not done yet
    vacuum_deadline  TIMESTAMP,              -- the old lake files are deleted by then
    PRIMARY KEY (request_id)
)
DISTSTYLE ALL;

CREATE TABLE courier.erasure_couriers (
    request_id  VARCHAR(128) NOT NULL,
    courier_id  VARCHAR(64)  NOT NULL,
    PRIMARY KEY (request_id, courier_id)
)
DISTSTYLE ALL;

CREATE TABLE courier.erasure_tiers (
    request_id    VARCHAR(128)   NOT NULL,
    tier          VARCHAR(32)    NOT NULL, -- lake, dead_letters, warehouse, live_store
    status        VARCHAR(16)    NOT NULL, -- done, skipped
    rows_removed  BIGINT         NOT NULL,
    detail        VARCHAR(4096)  NOT NULL,
    dag_run_id    VARCHAR(250)   NOT NULL,
    done_at       TIMESTAMP      NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (request_id, tier)
)
DISTSTYLE ALL;

CREATE VIEW courier.erasure_status AS
SELECT
    r.request_id,
    r.courier_count,
    r.requested_at,
    SUM(CASE WHEN t.tier = 'lake' THEN t.rows_removed END) AS lake_rows_removed,
    SUM(CASE WHEN t.tier = 'dead_letters' THEN t.rows_removed END) AS dead_letter_lines_removed,
    SUM(CASE WHEN t.tier = 'warehouse' THEN t.rows_removed END) AS warehouse_rows_removed,
    SUM(CASE WHEN t.tier = 'live_store' THEN t.rows_removed END) AS live_store_couriers_erased,
    COUNT(t.tier) AS tiers_done,
    SUM(CASE WHEN t.status = 'skipped' THEN 1 ELSE 0 END) AS tiers_skipped,
    CASE WHEN r.completed_at IS NULL THEN 'pending' ELSE 'complete' END AS status,
    r.completed_at,
    r.vacuum_deadline
FROM courier.erasure_requests AS r
LEFT JOIN courier.erasure_tiers AS t ON r.request_id = t.request_id
GROUP BY r.request_id, r.courier_count, r.requested_at, r.completed_at, r.vacuum_deadline;

CREATE TABLE courier.reloads (
    dag_run_id          VARCHAR(250) NOT NULL,
    start_date          DATE         NOT NULL,
    end_date            DATE         NOT NULL,
    table_version       BIGINT       NOT NULL,
    files_read          BIGINT       NOT NULL,
    rows_staged         BIGINT       NOT NULL,
    rows_inserted       BIGINT       NOT NULL,
    duplicates_skipped  BIGINT       NOT NULL,
    reloaded_at         TIMESTAMP    NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (dag_run_id)
)
DISTSTYLE ALL;

-- Positions of erased couriers a compactor run dropped from the stream (its report's
-- erased_skipped): the stream hop of the load ledger counts them beside the duplicates.
ALTER TABLE courier.load_ledger ADD COLUMN erased_skipped BIGINT DEFAULT 0 NOT NULL;

ALTER TABLE courier_staging.compactor_runs_staging ADD COLUMN erased_skipped BIGINT DEFAULT 0 NOT NULL;

COMMENT ON COLUMN courier.load_ledger.erased_skipped IS 'Positions of erased couriers the compactor run dropped (V005; neither written nor dead-lettered).';
COMMENT ON COLUMN courier_staging.compactor_runs_staging.erased_skipped IS 'Positions of erased couriers the run dropped (V005).';
COMMENT ON TABLE courier.erasure_requests IS 'The erasure ledger: one row per request to erase couriers from every tier (courier_erasure DAG); complete when completed_at is set.';
COMMENT ON COLUMN courier.erasure_requests.request_id IS 'Request id (the DAG param request_id, else derived from the DAG run); a rerun with it finishes the request.';
COMMENT ON COLUMN courier.erasure_requests.courier_count IS 'Couriers the request erases (see erasure_couriers).';
COMMENT ON COLUMN courier.erasure_requests.dag_run_id IS 'Airflow DAG run that registered the request.';
COMMENT ON COLUMN courier.erasure_requests.requested_at IS 'When the request was registered (UTC).';
COMMENT ON COLUMN courier.erasure_requests.completed_at IS 'When every tier was done (UTC); NULL while one is not.';
COMMENT ON COLUMN courier.erasure_requests.vacuum_deadline IS 'By when vacuum deletes the old lake files that still hold the erased rows (the compactor''s old_files_deleted_by, UTC).';
COMMENT ON TABLE courier.erasure_couriers IS 'The couriers of each erasure request.';
COMMENT ON COLUMN courier.erasure_couriers.request_id IS 'Erasure request (see erasure_requests).';
COMMENT ON COLUMN courier.erasure_couriers.courier_id IS 'Courier erased by the request.';
COMMENT ON TABLE courier.erasure_tiers IS 'The erasure ledger per tier: one row per request and tier done (lake, dead_letters, warehouse, live_store), written with the tier''s removal where the tier is the warehouse; a tier with a row is never done again.';
COMMENT ON COLUMN courier.erasure_tiers.request_id IS 'Erasure request (see erasure_requests).';
COMMENT ON COLUMN courier.erasure_tiers.tier IS 'lake (Delta table rows), dead_letters (dead-letter lines), warehouse (courier.positions rows; gold and staging in detail), live_store (couriers erased from the live position store).';
COMMENT ON COLUMN courier.erasure_tiers.status IS 'done, or skipped (detail says why, e.g. no live store configured).';
COMMENT ON COLUMN courier.erasure_tiers.rows_removed IS 'Rows or lines removed in the tier (live_store: couriers erased from it).';
COMMENT ON COLUMN courier.erasure_tiers.detail IS 'JSON: the tier''s other counts (files rewritten, table version, gold and staging rows, ...) or the reason it was skipped.';
COMMENT ON COLUMN courier.erasure_tiers.dag_run_id IS 'Airflow DAG run that did the tier.';
COMMENT ON COLUMN courier.erasure_tiers.done_at IS 'When the tier was done (UTC).';
COMMENT ON TABLE courier.reloads IS 'One row per reload of courier.positions for an event_date range from the lake (courier_reload DAG).';
COMMENT ON COLUMN courier.reloads.dag_run_id IS 'Airflow DAG run of the reload.';
COMMENT ON COLUMN courier.reloads.start_date IS 'First event_date reloaded.';
COMMENT ON COLUMN courier.reloads.end_date IS 'Last event_date reloaded (inclusive).';
COMMENT ON COLUMN courier.reloads.table_version IS 'Delta table version read (the version the warehouse had loaded up to); the reloaded rows carry it.';
COMMENT ON COLUMN courier.reloads.files_read IS 'Parquet files of those partitions active at that version.';
COMMENT ON COLUMN courier.reloads.rows_staged IS 'Rows read from those files (= rows in the lake).';
COMMENT ON COLUMN courier.reloads.rows_inserted IS 'Rows inserted into positions (counted there).';
COMMENT ON COLUMN courier.reloads.duplicates_skipped IS 'Rows skipped: another copy of the same event_id won.';
COMMENT ON COLUMN courier.reloads.reloaded_at IS 'When the reload committed (UTC).';
