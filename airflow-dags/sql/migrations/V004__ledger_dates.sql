-- Migration V004 (Redshift): the load ledger per event_date, for the daily lake-versus-
-- warehouse check (courier_positions_maintenance, reconcile_lake_and_warehouse): per
-- compactor run and UTC date, the rows staged, inserted into courier.positions and
-- skipped as duplicates, written by load_positions.sql in the load's transaction.
-- Loads made before this migration are entered from courier.positions (their
-- duplicates skipped were not counted per date: 0).
CREATE TABLE courier.load_ledger_dates (
    table_version       BIGINT    NOT NULL,
    event_date          DATE      NOT NULL,
    rows_staged         BIGINT    NOT NULL,
    rows_inserted       BIGINT    NOT NULL,
    duplicates_skipped  BIGINT    NOT NULL,
    loaded_at           TIMESTAMP NOT NULL DEFAULT GETDATE(),
    PRIMARY KEY (table_version, event_date)
)
DISTSTYLE ALL
SORTKEY (event_date);

INSERT INTO courier.load_ledger_dates (table_version, event_date, rows_staged, rows_inserted, duplicates_skipped)
SELECT p.table_version, p.event_date, COUNT(*), COUNT(*), 0
FROM courier.positions AS p
GROUP BY p.table_version, p.event_date;

COMMENT ON TABLE courier.load_ledger_dates IS 'The load ledger per UTC date: per compactor run and event_date, the rows staged, inserted and skipped, written in the load''s transaction; the daily check compares it and courier.positions with the lake''s rows per event_date.';
COMMENT ON COLUMN courier.load_ledger_dates.table_version IS 'Delta table version of the compactor run (see load_ledger).';
COMMENT ON COLUMN courier.load_ledger_dates.event_date IS 'UTC date of recorded_at (the Delta table''s partition).';
COMMENT ON COLUMN courier.load_ledger_dates.rows_staged IS 'Rows of this run and date staged (= rows in the lake).';
COMMENT ON COLUMN courier.load_ledger_dates.rows_inserted IS 'Rows of this run and date inserted into positions.';
COMMENT ON COLUMN courier.load_ledger_dates.duplicates_skipped IS 'Rows of this run and date skipped: late or batch duplicates of an event_id (first copy wins).';
COMMENT ON COLUMN courier.load_ledger_dates.loaded_at IS 'When the run was loaded (UTC).';

GRANT SELECT ON TABLE courier.load_ledger_dates TO ROLE courier_analyst;
