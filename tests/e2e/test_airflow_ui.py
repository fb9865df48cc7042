"""Airflow's web UI in a real browser: the hourly DAG's run shows as successful.

Sets up what `make demo` + `make airflow-ui` set up, in temporary places: a migrated
SQLite metadata database, a PostgreSQL warehouse database of its own, the hourly DAG
run once in local mode with `airflow dags test` (on an empty local stream, created by
starting and stopping the real ingest-api: a quiet night), then `airflow api-server` on a free port. Headless Chromium
(Selenium + Debian's chromium-driver) opens the DAG run's page and waits until it
shows the run's state as success; a screenshot goes to
target/test-artifacts/airflow-ui.png.

Run by scripts/test-airflow-ui.sh. Environment: AIRFLOW_VENV (the Airflow venv under
test), COMPACTOR_BIN and INGEST_API_BIN (default target/debug/), CHROMIUM, CHROMEDRIVER,
COURIER_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import psycopg
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ["AIRFLOW_VENV"])
COMPACTOR = Path(os.environ.get("COMPACTOR_BIN", ROOT / "target" / "debug" / "compactor"))
INGEST_API = Path(os.environ.get("INGEST_API_BIN", ROOT / "target" / "debug" / "ingest-api"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ADMIN_URL = os.environ.get("COURIER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCREENSHOT = ROOT / "target" / "test-artifacts" / "airflow-ui.png"
DAG_ID = "courier_positions_hourly"
TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowUiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="airflow-ui-")
        tmp = Path(cls.tmp.name)
        (tmp / "stream").mkdir()
        (tmp / "lake").mkdir()
        cls.create_local_stream(tmp / "stream")
        cls.db = f"courier_ui_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{cls.db}"')
        base = ADMIN_URL.rpartition("/")[0]
        cls.env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow-dags"),
            "PYTHONPATH": str(ROOT / "airflow-dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "COURIER_LOCAL_MODE": "true",
            "COURIER_DATA_DIR": str(tmp / "stream"),
            "COURIER_TABLE_URI": str(tmp / "lake" / "positions"),
            "COURIER_COMPACTOR_BIN": str(COMPACTOR),
            "AIRFLOW_CONN_COURIER_WAREHOUSE": f"{base}/{cls.db}",
        }
        cls.server = None
        airflow = str(VENV / "bin" / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=cls.env, check=True, capture_output=True)
        logical_date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:00:00+00:00")
        test = subprocess.run([airflow, "dags", "test", DAG_ID, logical_date], env=cls.env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        if test.returncode != 0:
            raise AssertionError(f"airflow dags test failed:\n{test.stdout[-4000:]}\n{test.stderr[-4000:]}")
        # The run as the metadata database has it.
        query = (
            "import json\n"
            "from airflow.models.dagrun import DagRun\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as s:\n"
            f"    runs = s.query(DagRun).filter(DagRun.dag_id == {DAG_ID!r}).all()\n"
            "    print(json.dumps([{'run_id': r.run_id, 'state': str(r.state)} for r in runs]))\n"
        )
        out = subprocess.run([str(VENV / "bin" / "python"), "-c", query], env=cls.env, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        (cls.dag_run,) = json.loads(out.strip().splitlines()[-1])
        subprocess.run([airflow, "dags", "reserialize"], env=cls.env, check=True, capture_output=True)
        cls.url = f"http://127.0.0.1:{free_port()}"
        cls.server_log = open(tmp / "api-server.log", "wb")
        cls.server = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", cls.url.rsplit(":", 1)[1]],
            env=cls.env, stdout=cls.server_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{cls.url}/api/v2/monitor/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if cls.server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"api-server did not come up: {(tmp / 'api-server.log').read_text()[-4000:]}")
            time.sleep(0.2)

    @staticmethod
    def create_local_stream(data_dir: Path):
        """ingest-api creates the local stream when it starts; stop it once it is ready."""
        keys = subprocess.run([INGEST_API, "keys", "create", "ui", "--rps", "10"], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        line = dict(x.split(":", 1) for x in keys.splitlines() if ":" in x)["line"].strip()
        url = f"127.0.0.1:{free_port()}"
        with open(data_dir.parent / "ingest-api.log", "wb") as out:
            api = subprocess.Popen([INGEST_API, "serve", "--listen", url, "--data-dir", str(data_dir), "--api-keys", line],
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            deadline = time.monotonic() + TIMEOUT
            try:
                while True:
                    try:
                        with urllib.request.urlopen(f"http://{url}/readyz", timeout=1) as r:
                            if r.status == 200:
                                break
                    except (urllib.error.URLError, OSError):
                        pass
                    if api.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError((data_dir.parent / "ingest-api.log").read_text())
                    time.sleep(0.05)
            finally:
                api.terminate()
                api.wait(timeout=40)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            os.killpg(cls.server.pid, 15)
            cls.server.wait(timeout=30)
            cls.server_log.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{cls.db}" WITH (FORCE)')
        cls.tmp.cleanup()

    def test_the_dag_run_shows_as_successful(self):
        self.assertEqual(self.dag_run["state"], "success")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000"):  # fmt: skip
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            page = f"{self.url}/dags/{DAG_ID}/runs/{quote(self.dag_run['run_id'], safe='')}"
            driver.get(page)

            def shows_success(d):
                text = d.find_element(By.TAG_NAME, "body").text
                # The run's page: its DAG, its tasks, and its state badge.
                return ("success" in text.lower().split() and "Dag Run" in text and "refresh_gold" in text
                        and text)  # fmt: skip

            try:
                text = WebDriverWait(driver, TIMEOUT, poll_frequency=0.25).until(shows_success)
            except Exception:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(SCREENSHOT))
                raise AssertionError(f"{driver.current_url} never showed the run as successful; it shows:\n"
                                     f"{driver.find_element(By.TAG_NAME, 'body').text[:3000]}") from None
            self.assertIn(DAG_ID, text)
            self.assertIn(quote(self.dag_run["run_id"], safe=""), driver.current_url)
            self.assertNotIn("failed", text.lower())
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(SCREENSHOT))
        finally:
            driver.quit()


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
