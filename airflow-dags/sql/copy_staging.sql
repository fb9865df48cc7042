-- Load the files of ONE compactor run into the staging table (Redshift).
-- manifest_uri is <table>/_manifests/v<table version, 20 digits>.json of the
-- version in that run's report, so a retried load reads the same files.
-- COPY ... FORMAT AS PARQUET matches columns by position and loads all or
-- nothing. TRUNCATE commits by itself in Redshift; a retry redoes both.
-- Local mode has no COPY from S3: the DAG reads the manifest's Parquet files
-- with pyarrow and streams them into the same table with PostgreSQL's
-- COPY FROM STDIN (courier_positions_hourly.py, _load_local).
TRUNCATE positions_staging;

COPY positions_staging
FROM '{{ manifest_uri }}'
IAM_ROLE '{{ iam_role }}'
FORMAT AS PARQUET
MANIFEST;
