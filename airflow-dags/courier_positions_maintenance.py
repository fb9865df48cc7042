"""
### courier_positions_maintenance

Daily warehouse upkeep for the courier position tables.

| task | what it does |
|---|---|
| `vacuum_analyze` | `VACUUM` and `ANALYZE` of `positions`, `courier_daily`, `positions_hourly` (`sql/maintenance.sql`, valid in Redshift and PostgreSQL; autocommit, since `VACUUM` cannot run in a transaction) on the `courier_warehouse` connection |

Not here yet: Delta table `optimize`/`vacuum`. The compactor has only `run`
and `status` today; when it gains maintenance subcommands, add them here
(ECS task in AWS mode, a local process in local mode).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import dag

SQL_DIR = Path(__file__).resolve().parent / "sql"


@dag(
    dag_id="courier_positions_maintenance",
    schedule="30 3 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["courier", "warehouse", "maintenance"],
    doc_md=__doc__,
    template_searchpath=[str(SQL_DIR)],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=10)},
)
def courier_positions_maintenance():
    SQLExecuteQueryOperator(
        task_id="vacuum_analyze",
        conn_id="courier_warehouse",
        sql="maintenance.sql",
        split_statements=True,
        autocommit=True,
    )


courier_positions_maintenance()
