-- SQLCheckOperator: the newest position in the warehouse was received no more
-- than params.freshness_hours before the end of the data interval. Catchup
-- safe: an old interval sees newer data and passes.
SELECT CASE
    WHEN MAX(received_at) >= CAST('{{ data_interval_end.strftime("%Y-%m-%d %H:%M:%S") }}' AS TIMESTAMP)
                             - INTERVAL '{{ params.freshness_hours | int }} hours'
    THEN 1 ELSE 0 END AS fresh
FROM positions;
