"""Shared fixtures: the repository paths and a fresh PostgreSQL database per test.

scripts/test-airflow.sh sets AIRFLOW_HOME (a migrated SQLite metadata
database), AIRFLOW__CORE__DAGS_FOLDER and AIRFLOW__CORE__LOAD_EXAMPLES, and
makes sure PostgreSQL is up at COURIER_TEST_PG_URL
(default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

DAGS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = DAGS_DIR.parent
SQL_DIR = DAGS_DIR / "sql"
ADMIN_URL = os.environ.get("COURIER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

sys.path.insert(0, str(DAGS_DIR))


def _reuse_the_in_process_execution_api() -> None:
    """dag.test() of Airflow 3.0 builds a new in-process Execution API app for every task
    (about 3 s each on two cores); Airflow 3.1+ keeps one (`functools.lru_cache` on
    `in_process_api_server`). Do the same on 3.0 so the tests take the same time on both;
    the tasks run exactly as before."""
    import functools

    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


_reuse_the_in_process_execution_api()


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "every_version: a dag.test() run that also runs on the Airflow versions newer than "
        "the deployed one (see pytest_collection_modifyitems)",
    )


def pytest_collection_modifyitems(config, items) -> None:
    """Every test runs on the deployed Airflow (Terraform's airflow_version, MWAA's pins).
    On a newer version (the forward-compatibility pass of scripts/test-airflow.sh) the
    DagBag, settings and SQL tests all run, but of the dag.test() runs against
    PostgreSQL (the tests using both `dagbag` and `pg_database`, a minute of CI each)
    only those marked `every_version`: they are deselected, not skipped, and pytest's
    summary counts them. COURIER_TEST_EVERY_RUN=1 runs them all on every version."""
    version = os.environ.get("COURIER_TEST_AIRFLOW_VERSION")
    deployed = os.environ.get("COURIER_DEPLOYED_AIRFLOW_VERSION")
    if not version or version == deployed or os.environ.get("COURIER_TEST_EVERY_RUN") == "1":
        return
    kept, deselected = [], []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        dag_run = {"dagbag", "pg_database"} <= names
        (deselected if dag_run and item.get_closest_marker("every_version") is None else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_database():
    """Create a database of its own for one test; drop it afterwards. Yields its URL."""
    name = f"courier_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _dagbag_class():
    try:  # Airflow >= 3.1
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0 (MWAA 3.0.6)
        from airflow.models.dagbag import DagBag
    return DagBag


@pytest.fixture(scope="session")
def dagbag():
    return _dagbag_class()(dag_folder=str(DAGS_DIR))
