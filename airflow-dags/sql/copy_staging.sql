-- Load the files of the compactor runs not yet in the warehouse into the
-- staging table (Redshift), oldest first, and record those runs in
-- compactor_runs_staging. `runs` is the DAG's load plan (runs_to_load: the
-- output of `compactor runs --after-version <MAX(table_version) of
-- compactor_loads>`); each run with files names its manifest
-- (<manifests>/v<table version, 20 digits>.json), so a retried load reads the
-- same files. COPY ... FORMAT AS PARQUET matches columns by position and loads
-- all or nothing. TRUNCATE commits by itself in Redshift; a retry redoes all.
-- Local mode has no COPY from S3: the DAG reads the manifests' Parquet files
-- with pyarrow and streams them into the same table with PostgreSQL's
-- COPY FROM STDIN (courier_positions_hourly.py, _load_local).
TRUNCATE positions_staging;

TRUNCATE compactor_runs_staging;
{% for r in runs %}
{%- if r.files_added > 0 %}
COPY positions_staging
FROM '{{ r.manifest }}'
IAM_ROLE '{{ iam_role }}'
FORMAT AS PARQUET
MANIFEST;
{% endif %}
INSERT INTO compactor_runs_staging (table_version, compactor_run, rows_written, files_added, manifest)
VALUES (
    {{ r.table_version | int }}, {{ r.run | int }}, {{ r.rows_written | int }}, {{ r.files_added | int }},
    {% if r.manifest %}'{{ r.manifest | replace("'", "''") }}'{% else %}NULL{% endif %}
);
{% endfor %}
