-- The warehouse side of the daily lake-versus-warehouse check, in one statement (one
-- snapshot, so a load committing meanwhile cannot split it): the table version the
-- warehouse has loaded up to, and per event_date the rows in courier.positions and what
-- the load ledger staged, inserted and skipped. The maintenance DAG compares it with the
-- lake's rows per event_date as of that table version (courier_common.lake_rows_by_date).
WITH loaded AS (
    SELECT COALESCE(MAX(l.table_version), 0) AS table_version
    FROM courier.load_ledger AS l
),

ledger AS (
    SELECT
        d.event_date,
        SUM(d.rows_staged) AS rows_staged,
        SUM(d.rows_inserted) AS rows_inserted,
        SUM(d.duplicates_skipped) AS duplicates_skipped
    FROM courier.load_ledger_dates AS d
    GROUP BY d.event_date
),

facts AS (
    SELECT
        p.event_date,
        COUNT(*) AS fact_rows
    FROM courier.positions AS p
    GROUP BY p.event_date
),

dates AS (
    SELECT
        COALESCE(lg.event_date, f.event_date) AS event_date,
        COALESCE(f.fact_rows, 0) AS fact_rows,
        COALESCE(lg.rows_staged, 0) AS rows_staged,
        COALESCE(lg.rows_inserted, 0) AS rows_inserted,
        COALESCE(lg.duplicates_skipped, 0) AS duplicates_skipped
    FROM ledger AS lg
    FULL OUTER JOIN facts AS f ON lg.event_date = f.event_date
)

SELECT
    lo.table_version,
    dt.event_date,
    dt.fact_rows,
    dt.rows_staged,
    dt.rows_inserted,
    dt.duplicates_skipped
FROM loaded AS lo
LEFT JOIN dates AS dt ON 1 = 1
ORDER BY dt.event_date;
