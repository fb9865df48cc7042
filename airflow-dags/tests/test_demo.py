"""`make demo` (scripts/demo.sh) with a deliberately broken hop: it must exit non-zero and
print the numbers that do not reconcile. (`make test-demo` runs the demo that reconciles.)

The demo runs the deployed Airflow version only, so this test runs once, on it."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import uuid

import psycopg
import pytest

from conftest import ADMIN_URL, REPO_ROOT

COMPACTOR = REPO_ROOT / "target" / "debug" / "compactor"
NEEDED = [REPO_ROOT / "target" / "debug" / b for b in ("ingest-api", "compactor", "courier-sim")]

pytestmark = pytest.mark.skipif(
    os.environ.get("COURIER_TEST_AIRFLOW_VERSION") != os.environ.get("COURIER_DEPLOYED_AIRFLOW_VERSION"),
    reason="make demo runs the deployed Airflow version; tested there",
)


def lying_compactor(tmp):
    """The real compactor, whose every report (the --output-uri file, or stdout when the
    demo reads it from there) claims one row more than it wrote: the lake hop breaks."""
    liar = tmp / "lying-compactor"
    liar.write_text(
        f"#!{sys.executable}\n"
        "import json, subprocess, sys\n"
        f"p = subprocess.run([{str(COMPACTOR)!r}, *sys.argv[1:]], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "args = sys.argv[1:]\n"
        "def lie(r):\n"
        "    for report in ([e['report'] for e in r] if isinstance(r, list) else [r]):\n"
        "        if report.get('rows_written'):\n"
        "            report['rows_written'] += 1\n"
        "    return r\n"
        "if p.returncode == 0 and ('run' in args or 'runs' in args):\n"
        "    if '--output-uri' in args:\n"
        "        uri = args[args.index('--output-uri') + 1]\n"
        "        json.dump(lie(json.load(open(uri))), open(uri, 'w'))\n"
        "        sys.stdout.write(p.stdout)\n"
        "    else:\n"
        "        print(json.dumps(lie(json.loads(p.stdout))))\n"
        "else:\n"
        "    sys.stdout.write(p.stdout)\n"
        "sys.exit(p.returncode)\n"
    )
    liar.chmod(liar.stat().st_mode | stat.S_IEXEC)
    return liar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_fails_with_the_numbers_when_a_hop_does_not_reconcile(tmp_path):
    missing = [str(p) for p in NEEDED if not p.exists()]
    assert not missing, f"missing {missing}: run `cargo build --workspace` first"
    db = f"courier_test_demo_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COURIER_", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__", "AIRFLOW_HOME"))}  # fmt: skip
    env.update(DEMO_DIR=str(tmp_path / "demo"), DEMO_DB=db, DEMO_SECONDS="3", DEMO_COURIERS="5", DEMO_SKIP_BUILD="1",
               DEMO_PORT=str(free_port()), DEMO_COMPACTOR_BIN=str(lying_compactor(tmp_path)))  # fmt: skip
    try:
        demo = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "demo.sh")], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=900)  # fmt: skip
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    out = demo.stdout + demo.stderr
    assert demo.returncode != 0, out
    # The demo's own reconciliation names the broken hop with both numbers.
    m = re.search(r"MISMATCH positions in the stream = rows written \+ duplicates dropped \+ dead-lettered: (\d+) = (\d+)", out)
    assert m and int(m.group(2)) == int(m.group(1)) + 1, out
    m = re.search(r"MISMATCH rows written by the compactor = rows in the Delta table: (\d+) = (\d+)", out)
    assert m and int(m.group(1)) == int(m.group(2)) + 1, out
    # The hourly DAG refused the load (lake != staged) and the demo shows its check's numbers.
    assert "the hourly DAG failed" in out and "Pass value" in out, out
    assert re.search(r"MISMATCH rows in the Delta table = rows in the warehouse \(positions\): (\d+) = 0", out), out
    assert "FAILED: the demo does not reconcile" in out
