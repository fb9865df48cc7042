"""End to end in local mode: the real ingest-api and compactor binaries, the hourly
DAG run with dag.test(), PostgreSQL as the warehouse."""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from conftest import REPO_ROOT

INGEST_API = REPO_ROOT / "target" / "debug" / "ingest-api"
COMPACTOR = REPO_ROOT / "target" / "debug" / "compactor"
DAG_ID = "courier_positions_hourly"
MAINTENANCE_DAG_ID = "courier_positions_maintenance"

# The real binaries, built by `make test-rust` before these tests run. Missing binaries
# fail the tests (they are never skipped): build them with `cargo build --workspace`.
_missing = [str(p) for p in (INGEST_API, COMPACTOR) if not p.exists()]
if _missing:
    pytest.fail(f"missing {', '.join(_missing)}: run `cargo build --workspace` first", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IngestApi:
    """ingest-api on the local stream in data_dir, on a free port."""

    def __init__(self, data_dir):
        keys = subprocess.run([INGEST_API, "keys", "create", "e2e", "--rps", "10000"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        fields = dict(line.split(":", 1) for line in keys.splitlines() if ":" in line)
        self.token, key_line = fields["token"].strip(), fields["line"].strip()
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(data_dir / "ingest-api.log", "wb")
        self.proc = subprocess.Popen(
            [INGEST_API, "serve", "--listen", self.url.removeprefix("http://"), "--data-dir", str(data_dir),
             "--api-keys", key_line, "--http-workers", "2", "--linger-ms", "5"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest-api did not become ready: {(data_dir / 'ingest-api.log').read_text()}")
            time.sleep(0.05)

    def post(self, positions) -> dict:
        req = urllib.request.Request(
            f"{self.url}/v1/positions", data=json.dumps({"positions": positions}).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 202
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{e.code}: {e.read()!r}") from e

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=40)
        self.log.close()


def iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_positions(n_couriers: int, per_courier: int, start: datetime, seed: int) -> list[dict]:
    out = []
    for c in range(n_couriers):
        for i in range(per_courier):
            p = {
                "event_id": str(uuid.UUID(int=(seed << 64) | (c << 32) | i)),
                "courier_id": f"courier-{seed}-{c:03d}",
                "lat": -23.56 + 0.001 * i + 0.01 * c,
                "lon": -46.65 - 0.0007 * i * (1 + c % 3),
                "recorded_at": iso(start + timedelta(minutes=7 * i + c)),
            }
            if i % 3:
                p["speed_mps"] = 2.0 + (i % 7)
                p["heading_deg"] = float((i * 37) % 360)
                p["accuracy_m"] = 4.5
            if i % 4 == 0:
                p["order_id"] = f"order-{c}-{i // 4}"
            out.append(p)
    return out


def send(api: IngestApi, positions: list[dict]) -> dict[str, dict]:
    """Post in batches; re-send a few (same event_id) and one invalid position. Returns the
    unique acknowledged positions by event_id."""
    acked: dict[str, dict] = {}
    for start in range(0, len(positions), 50):
        batch = positions[start:start + 50]
        answer = api.post(batch)
        rejected = {r["index"] for r in answer["rejected"]}
        for i, p in enumerate(batch):
            if i not in rejected:
                acked[p["event_id"]] = p
    repeats = positions[::17]  # producer retries: same event ids again
    invalid = [{**positions[1], "event_id": str(uuid.uuid4()), "lat": 123.0}]
    answer = api.post(repeats + invalid)
    assert answer["accepted"] == len(repeats) and [r["index"] for r in answer["rejected"]] == [len(repeats)]
    return acked


def parse_ts(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")


def haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, a)))


def expected_gold(acked: dict[str, dict]):
    by_day = defaultdict(list)
    for p in acked.values():
        ts = parse_ts(p["recorded_at"])
        by_day[(ts.date(), p["courier_id"])].append((ts, p["event_id"], p))
    daily = {}
    for key, items in by_day.items():
        items.sort(key=lambda x: (x[0], x[1]))
        dist = sum(haversine_km(a[2]["lat"], a[2]["lon"], b[2]["lat"], b[2]["lon"]) for a, b in zip(items, items[1:]))
        speeds = [x[2]["speed_mps"] for x in items if "speed_mps" in x[2]]
        daily[key] = (len(items), items[0][0], items[-1][0], dist, sum(speeds) / len(speeds) if speeds else None)
    hourly = defaultdict(lambda: [set(), 0])
    for p in acked.values():
        hour = parse_ts(p["recorded_at"]).replace(minute=0, second=0, microsecond=0)
        hourly[hour][0].add(p["courier_id"])
        hourly[hour][1] += 1
    return daily, {h: (len(c), n) for h, (c, n) in hourly.items()}


@pytest.fixture
def local_env(tmp_path, pg_database, monkeypatch):
    data_dir = tmp_path / "stream"
    data_dir.mkdir()
    table = tmp_path / "lake" / "positions"
    table.parent.mkdir()
    monkeypatch.setenv("COURIER_LOCAL_MODE", "true")
    monkeypatch.setenv("COURIER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COURIER_STREAM_NAME", "courier-positions")
    monkeypatch.setenv("COURIER_TABLE_URI", str(table))
    monkeypatch.setenv("COURIER_COMPACTOR_BIN", str(COMPACTOR))
    monkeypatch.setenv("AIRFLOW_CONN_COURIER_WAREHOUSE", pg_database)
    api = IngestApi(data_dir)
    try:
        yield {"api": api, "db": pg_database, "table": table, "tmp": tmp_path}
    finally:
        api.stop()


def run_dag(dagbag, logical_date):
    dag = dagbag.dags[DAG_ID]
    return dag.test(logical_date=logical_date)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def snapshot(db):
    with psycopg.connect(db) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("courier.positions", "courier_gold.courier_daily", "courier_gold.positions_hourly",
                      "courier_staging.gold_dirty_dates", "courier.load_ledger")
        }


def this_hour() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


@pytest.mark.every_version
def test_hourly_dag_loads_exactly_the_acked_positions_and_gold_agrees(dagbag, local_env):
    now = datetime.now(timezone.utc)
    # Two UTC dates: yesterday evening and the last hours.
    acked = send(local_env["api"], make_positions(4, 12, now - timedelta(hours=27), seed=1))
    acked |= send(local_env["api"], make_positions(5, 10, now - timedelta(hours=2), seed=2))

    dag_run = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert dag_run.state == "success", states(dag_run)
    got = states(dag_run)
    assert got["compact_local"] == "success" and got["compact_ecs"] == "skipped"
    assert set(got.values()) == {"success", "skipped"}
    # The compactor's reports reached the DAG through files unique per run, task and try.
    reports = sorted((local_env["table"] / "_reports" / DAG_ID).rglob("*.json"))
    assert [r.relative_to(local_env["table"] / "_reports" / DAG_ID).parts[1:] for r in reports] == [
        ("compact_local", "try-001-round-000.json"), ("runs_local", "try-001-round-000.json")]
    assert json.loads(reports[0].read_text())["rows_written"] == len(acked)
    # The ledger reconciles every hop: stream = lake + duplicates + dead letters = staged = inserted + skipped.
    (entry,) = ledger(local_env["db"])
    assert entry["rows_written"] == entry["rows_staged"] == entry["rows_inserted"] == len(acked)
    assert entry["positions_decoded"] == entry["rows_written"] + entry["duplicates_dropped"] + entry["dead_lettered"]
    assert entry["duplicates_dropped"] == len(make_positions(4, 12, now, 1)[::17]) + len(make_positions(5, 10, now, 2)[::17])

    with psycopg.connect(local_env["db"]) as conn:
        rows = conn.execute(
            "SELECT event_id, courier_id, lat, lon, recorded_at, speed_mps, heading_deg, accuracy_m, order_id, event_date"
            " FROM courier.positions"
        ).fetchall()
        assert len(rows) == len(acked)
        for event_id, courier, lat, lon, recorded_at, speed, heading, accuracy, order_id, event_date in rows:
            p = acked[event_id]
            assert (courier, recorded_at) == (p["courier_id"], parse_ts(p["recorded_at"]))
            # serde_json (without its float_roundtrip feature) may parse a double 1 ULP off.
            assert (lat, lon) == (pytest.approx(p["lat"], rel=1e-14), pytest.approx(p["lon"], rel=1e-14))
            assert (speed, heading, accuracy, order_id) == (
                p.get("speed_mps"), p.get("heading_deg"), p.get("accuracy_m"), p.get("order_id"))
            assert event_date == recorded_at.date()

        daily, hourly = expected_gold(acked)
        got_daily = {
            (d, c): (n, first, last, dist, speed)
            for d, c, n, first, last, dist, speed in conn.execute(
                "SELECT event_date, courier_id, positions, first_seen_at, last_seen_at, distance_km, avg_speed_mps"
                " FROM courier_gold.courier_daily")
        }  # fmt: skip
        assert set(got_daily) == set(daily)
        assert len({d for d, _ in daily}) >= 2
        for key, (n, first, last, dist, speed) in daily.items():
            g = got_daily[key]
            assert g[:3] == (n, first, last), key
            assert g[3] == pytest.approx(dist, rel=1e-9, abs=1e-9), key
            assert g[4] == pytest.approx(speed), key
        got_hourly = dict((h, (a, n)) for h, a, n in conn.execute(
            "SELECT event_hour, active_couriers, positions FROM courier_gold.positions_hourly"))
        assert got_hourly == hourly
        assert conn.execute("SELECT COUNT(*) FROM courier_staging.gold_dirty_dates").fetchone() == (0,)

    # The same interval again: nothing new in the stream, nothing changes.
    before = snapshot(local_env["db"])
    again = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert again.state == "success", states(again)
    assert snapshot(local_env["db"]) == before


def lying_compactor(tmp, field: str, subcommands: tuple[str, ...]):
    """Fault injection: the real compactor, whose report (the --output-uri file) overstates
    `field` by one for the given subcommands."""
    liar = tmp / f"lying-compactor-{field}"
    liar.write_text(
        f"#!{sys.executable}\n"
        "import json, subprocess, sys\n"
        f"p = subprocess.run([{str(COMPACTOR)!r}, *sys.argv[1:]], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "args = sys.argv[1:]\n"
        "uri = args[args.index('--output-uri') + 1]\n"
        f"if p.returncode == 0 and set(args) & {set(subcommands)!r}:\n"
        "    r = json.load(open(uri))\n"
        "    for report in ([e['report'] for e in r] if isinstance(r, list) else [r]):\n"
        f"        report[{field!r}] += 1\n"
        "    json.dump(r, open(uri, 'w'))\n"
        "print(json.dumps({'stdout': 'is not the report'}))\n"
        "sys.exit(p.returncode)\n"
    )
    liar.chmod(liar.stat().st_mode | stat.S_IEXEC)
    return liar


def test_run_whose_counts_do_not_reconcile_fails_changes_nothing_and_a_cleared_run_loads_once(
        dagbag, local_env, monkeypatch, caplog):
    now = datetime.now(timezone.utc)
    send(local_env["api"], make_positions(3, 6, now - timedelta(hours=2), seed=3))
    first = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert first.state == "success", states(first)
    before = snapshot(local_env["db"])

    # A compactor whose reports claim one row more than its files hold.
    monkeypatch.setenv("COURIER_COMPACTOR_BIN", str(lying_compactor(local_env["tmp"], "rows_written", ("run", "runs"))))
    more = send(local_env["api"], make_positions(3, 6, now - timedelta(hours=1), seed=4))

    failed = run_dag(dagbag, this_hour())
    assert failed.state == "failed"
    got = states(failed)
    assert got["runs_to_load"] == "success" and got["load_staging"] == "success"
    assert got["check_staging_row_count"] == "failed"
    assert got["load_positions"] == "upstream_failed"
    assert got["refresh_gold"] == "upstream_failed"
    # The notifier named the DAG, the task, the run and a log link (local mode: in the log).
    alerts = [r.getMessage() for r in caplog.records if "COURIER ALERT (local mode" in r.getMessage()]
    assert any("task check_staging_row_count (try 1)" in a and f"run {failed.run_id}" in a
               and "/dags/courier_positions_hourly/runs/" in a and "DAG courier_positions_hourly" in a
               for a in alerts), alerts  # fmt: skip
    assert snapshot(local_env["db"]) == before

    # The run is cleared after the cause is fixed: the staged runs load exactly once.
    monkeypatch.setenv("COURIER_COMPACTOR_BIN", str(COMPACTOR))
    cleared = run_dag(dagbag, this_hour())
    assert cleared.state == "success", states(cleared)
    assert len(fact_event_ids(local_env["db"])) == len(before["courier.positions"]) + len(more)
    assert hourly_ledger_reconciles(local_env["db"])


def task_logs(caplog, capsys) -> str:
    """What the tasks logged: Airflow 3.3 routes task logs through logging (caplog),
    Airflow 3.0's dag.test() prints them (stdout)."""
    return caplog.text + capsys.readouterr().out


def test_a_broken_hop_after_staging_fails_the_run_with_its_numbers(dagbag, local_env, monkeypatch, caplog, capsys):
    """Fault injection: the compactor's `runs` report overstates its duplicates, so the
    stream identity breaks; reconcile fails the run and logs the numbers."""
    now = datetime.now(timezone.utc)
    send(local_env["api"], make_positions(3, 6, now - timedelta(hours=2), seed=11))
    monkeypatch.setenv("COURIER_COMPACTOR_BIN",
                       str(lying_compactor(local_env["tmp"], "duplicates_dropped", ("runs",))))  # fmt: skip
    failed = run_dag(dagbag, this_hour())
    assert failed.state == "failed"
    got = states(failed)
    assert got["load_positions"] == "success" and got["reconcile"] == "failed"
    assert got["refresh_gold"] == "upstream_failed"
    logs = task_logs(caplog, capsys)
    assert "stream != lake + duplicates + dead letters: positions_decoded" in logs
    assert "rows_written 18 + duplicates_dropped" in logs


def hourly_ledger_reconciles(db) -> bool:
    import courier_positions_hourly as hourly

    return hourly.reconcile_ledger(ledger(db)) == [] and ledger(db) != []


def ledger(db) -> list[dict]:
    import courier_positions_hourly as hourly

    with psycopg.connect(db) as conn:
        return [dict(zip(hourly.LEDGER_COLUMNS, r)) for r in conn.execute(
            f"SELECT {', '.join(hourly.LEDGER_COLUMNS)} FROM courier.load_ledger ORDER BY table_version")]


def test_a_backlog_is_loaded_in_the_same_run_and_said_so(dagbag, local_env, monkeypatch, caplog, capsys):
    now = datetime.now(timezone.utc)
    acked = send(local_env["api"], make_positions(4, 10, now - timedelta(hours=2), seed=12))
    # Each `compactor run` reads at most 15 positions: several rounds in one DAG run.
    monkeypatch.setenv("COURIER_COMPACTOR_MAX_POSITIONS", "15")
    dag_run = run_dag(dagbag, this_hour())
    assert dag_run.state == "success", states(dag_run)
    rounds = dag_run.get_task_instance("compact_local").xcom_pull(task_ids="compact_local")
    assert len(rounds) >= 2 and all(r["backlog"] for r in rounds[:-1]) and not rounds[-1]["backlog"]
    assert "compactor reports a backlog after round 0" in task_logs(caplog, capsys)
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    assert len(ledger(local_env["db"])) == len([r for r in rounds if r["committed"]])
    assert hourly_ledger_reconciles(local_env["db"])

    # Rounds are bounded: with one round per DAG run the backlog is left to the next run,
    # and freshness (lag-based) fails when the newest loaded position is older than allowed.
    acked |= send(local_env["api"], make_positions(4, 10, now - timedelta(hours=2), seed=13))
    monkeypatch.setenv("COURIER_BACKLOG_MAX_ROUNDS", "1")
    monkeypatch.setenv("COURIER_FRESHNESS_MAX_LAG_MINUTES", "0")
    behind = run_dag(dagbag, this_hour())
    assert behind.state == "failed"
    assert states(behind)["check_freshness"] == "failed"
    logs = task_logs(caplog, capsys)
    assert "backlog left after 1 rounds" in logs
    assert "warehouse not fresh: the compactor reports a backlog" in logs
    # The backlog left is not left for the next hour: another run of the DAG is triggered
    # (queued behind this one), as in AWS mode, where one ECS compactor task runs per DAG run.
    got = states(behind)
    assert got["backlog_left"] == "success" and got["trigger_backlog_run"] == "success"
    assert "triggering another run of courier_positions_hourly to load it" in logs
    (triggered,) = [r for r in dag_runs() if (r.conf or {}).get("backlog_of") == behind.run_id]
    # A manual run on Airflow 3.0, an "operator_triggered" one from 3.1 on: never "scheduled",
    # so check_on_time does not call it late.
    assert str(triggered.run_type).lower().rpartition(".")[2] in ("manual", "operator_triggered")
    # That run (here: run at once) loads the rest; nothing is left, nothing triggered.
    monkeypatch.setenv("COURIER_BACKLOG_MAX_ROUNDS", "6")
    monkeypatch.setenv("COURIER_FRESHNESS_MAX_LAG_MINUTES", "180")
    rest = run_dag(dagbag, this_hour() + timedelta(hours=1))
    assert rest.state == "success", states(rest)
    assert states(rest)["trigger_backlog_run"] == "skipped"
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    assert hourly_ledger_reconciles(local_env["db"])


def dag_runs():
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == DAG_ID).all()
        session.expunge_all()
        return runs


def test_an_empty_warehouse_on_a_quiet_night_is_fresh(dagbag, local_env):
    quiet = run_dag(dagbag, this_hour())
    assert quiet.state == "success", states(quiet)
    assert snapshot(local_env["db"])["courier.positions"] == [] and ledger(local_env["db"]) == []
    fresh = quiet.get_task_instance("check_freshness").xcom_pull(task_ids="check_freshness")
    assert fresh == "warehouse caught up with the stream (no data yet)"


def test_a_hung_compactor_is_stopped_by_the_task_timeout(dagbag, local_env, monkeypatch, caplog):
    """Fault injection: a compactor that never returns. The task's execution_timeout
    (shortened here) fails it, the process is killed, and the alert goes out."""
    pid_file = local_env["tmp"] / "hung.pid"
    hung = local_env["tmp"] / "hung-compactor"
    hung.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    hung.chmod(hung.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("COURIER_COMPACTOR_BIN", str(hung))
    dag = dagbag.dags[DAG_ID]
    task = dag.get_task("compact_local")
    monkeypatch.setattr(task, "execution_timeout", timedelta(seconds=3))
    monkeypatch.setattr(task, "retries", 0)
    started = time.monotonic()
    dag_run = dag.test(logical_date=this_hour())
    assert time.monotonic() - started < 60
    assert dag_run.state == "failed"
    assert states(dag_run)["compact_local"] == "failed"
    pid = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert "task compact_local (try 1)" in caplog.text and "COURIER ALERT" in caplog.text


def compactor(env, *args) -> dict | list:
    """Run the compactor binary directly on the test's stream and table (its report is
    thrown away by the callers that simulate a lost report)."""
    table = str(env["table"])
    stream = ["--stream-name", "courier-positions"]
    local = ["--data-dir", str(env["tmp"] / "stream")]
    extra = {"run": [*local, *stream], "status": [*local, *stream], "runs": stream}.get(args[0], [])
    out = subprocess.run([COMPACTOR, *args, *extra, "--table-uri", table], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def fact_event_ids(db) -> list[str]:
    with psycopg.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM courier.positions ORDER BY event_id")]


def loads(db) -> list[tuple]:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT table_version, compactor_run, rows_written FROM courier.load_ledger ORDER BY 1").fetchall()


def test_runs_whose_reports_were_lost_are_loaded_exactly_once(dagbag, local_env):
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=2)
    # A compactor run commits, but nobody sees its report (its task died after the commit).
    acked = send(local_env["api"], make_positions(3, 8, start, seed=5))
    lost = compactor(local_env, "run")
    assert lost["committed"] and lost["table_version"] == 1

    # The next DAG run compacts the new positions and loads both runs.
    acked |= send(local_env["api"], make_positions(3, 8, start, seed=6))
    first = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert first.state == "success", states(first)
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    assert [(v, r) for v, r, _ in loads(local_env["db"])] == [(1, 1), (2, 2)]
    assert sum(n for *_, n in loads(local_env["db"])) == len(acked)

    # A DAG run that failed after compacting (here: a run made outside the DAG again) is
    # caught up by the next one, and a repeat changes nothing.
    acked |= send(local_env["api"], make_positions(3, 8, start, seed=7))
    compactor(local_env, "run")
    second = run_dag(dagbag, this_hour())
    assert second.state == "success", states(second)
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    assert [v for v, *_ in loads(local_env["db"])] == [1, 2, 3]
    before = snapshot(local_env["db"])
    again = run_dag(dagbag, this_hour())
    assert again.state == "success", states(again)
    assert snapshot(local_env["db"]) == before


@pytest.mark.every_version
def test_maintenance_dag_optimizes_and_vacuums_the_table_without_changing_rows(dagbag, local_env):
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=2)
    acked = {}
    for seed in (8, 9, 10):  # three compactor runs on the same dates: several small files per partition
        acked |= send(local_env["api"], make_positions(3, 6, start, seed=seed))
        compactor(local_env, "run")
    hourly = run_dag(dagbag, this_hour() - timedelta(hours=1))
    assert hourly.state == "success", states(hourly)
    before = compactor(local_env, "status")
    assert before["rows"] == len(acked)
    warehouse = snapshot(local_env["db"])

    maintenance = dagbag.dags[MAINTENANCE_DAG_ID].test(logical_date=this_hour() - timedelta(hours=1))
    assert maintenance.state == "success", states(maintenance)
    got = states(maintenance)
    assert got["optimize_local"] == got["vacuum_local"] == got["vacuum_analyze"] == "success"
    assert got["optimize_ecs"] == got["vacuum_ecs"] == "skipped"
    optimized = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in maintenance.get_task_instances()}
    assert optimized["optimize_local"]["files_removed"] > optimized["optimize_local"]["files_added"] >= 1
    assert optimized["vacuum_local"]["files_deleted"] == []  # the replaced files are younger than the retention

    after = compactor(local_env, "status")
    assert after["rows"] == before["rows"]
    assert after["files"] < before["files"]
    assert after["files"] == len({parse_ts(p["recorded_at"]).date() for p in acked.values()})  # one per partition
    assert after["table_version"] == before["table_version"] + 1

    # The optimize commit is not a compactor run: the next hourly load finds nothing new.
    again = run_dag(dagbag, this_hour())
    assert again.state == "success", states(again)
    assert snapshot(local_env["db"]) == warehouse


def demo_venv_python():
    """The demo's venv (deltalake, polars): builds it when missing (scripts/ensure-venv.sh)."""
    venv = REPO_ROOT / ".tools" / "demo-venv"
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "ensure-venv.sh"), str(venv),
                    str(REPO_ROOT / "scripts" / "requirements-demo.txt")], check=True, capture_output=True)  # fmt: skip
    return venv / "bin" / "python"


def delta_rows_by_date(table) -> dict[str, int]:
    """The table's rows per event_date read by polars' Delta reader (delta-rs; the data
    files, not the statistics): the reference for the Delta log count."""
    code = ("import collections, json, os, sys\nimport polars as pl\n"
            "t = pl.read_delta(sys.argv[1], columns=['event_date'])\n"
            "c = collections.Counter(str(d) for d in t['event_date'].to_list())\n"
            "print(json.dumps(c)); sys.stdout.flush(); os._exit(0)\n")  # fmt: skip
    out = subprocess.run([demo_venv_python(), "-c", code, str(table)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_daily_check_counts_the_lake_per_date_and_fails_with_the_numbers(dagbag, local_env, monkeypatch, caplog, capsys):
    """The maintenance DAG's reconcile_lake_and_warehouse, against the real compactor's
    table: the lake holds late duplicates (a dedup window of one commit lets a re-sent batch
    through), the warehouse skipped them, and per event_date lake = warehouse + skipped.
    Then a row lost from the warehouse fails the check with the date and its numbers."""
    import courier_common

    monkeypatch.setenv("COMPACTOR_DEDUP_COMMITS", "1")  # read by the compactor (flags read their env)
    now = datetime.now(timezone.utc)
    first = make_positions(3, 6, now - timedelta(hours=27), seed=14)
    acked = send(local_env["api"], first)
    compactor(local_env, "run")
    acked |= send(local_env["api"], make_positions(3, 6, now - timedelta(hours=2), seed=15))
    compactor(local_env, "run")
    local_env["api"].post(first)  # the same event ids again, two commits later: past the dedup window
    hourly = run_dag(dagbag, this_hour())
    assert hourly.state == "success", states(hourly)
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    skipped = sum(r["late_duplicates_skipped"] + r["batch_duplicates_skipped"] for r in ledger(local_env["db"]))
    assert skipped >= len(first)  # in the lake twice, in the warehouse once

    # The Delta log count agrees with the data files read by the deltalake library.
    version = max(r["table_version"] for r in ledger(local_env["db"]))
    lake = courier_common.lake_rows_by_date(str(local_env["table"]), version)
    assert lake == delta_rows_by_date(local_env["table"])
    assert sum(lake.values()) == len(acked) + skipped

    maintenance = dagbag.dags[MAINTENANCE_DAG_ID]
    ok = maintenance.test(logical_date=this_hour() - timedelta(hours=1))
    assert ok.state == "success", states(ok)
    result = ok.get_task_instance("reconcile_lake_and_warehouse").xcom_pull(task_ids="reconcile_lake_and_warehouse")
    assert result["lake"] == lake and result["table_version"] == version

    # A row lost from the warehouse: the check fails and names the date with its numbers.
    with psycopg.connect(local_env["db"], autocommit=True) as conn:
        (lost_date,) = conn.execute(
            "DELETE FROM courier.positions WHERE event_id = %s RETURNING event_date", (first[0]["event_id"],)).fetchone()
    for t in maintenance.tasks:  # no retry (10 min apart) of what fails with the run
        monkeypatch.setattr(t, "retries", 0)
    broken = maintenance.test(logical_date=this_hour())
    assert broken.state == "failed"
    # Only the check failed: optimize with nothing to do (a report with no table version) and
    # vacuum still succeed.
    assert {t for t, state in states(broken).items() if state == "failed"} == {"reconcile_lake_and_warehouse"}, \
        states(broken)
    w = result["warehouse"][str(lost_date)]
    logs = task_logs(caplog, capsys)
    assert (f"event_date {lost_date}: lake {lake[str(lost_date)]} rows (table version {version}) != warehouse "
            f"{w['fact_rows'] - 1} rows in courier.positions + {w['duplicates_skipped']} duplicates skipped") in logs


def test_the_delta_log_count_reads_checkpoints_and_any_earlier_version(local_env):
    """A checkpoint written by the deltalake library (as delta-rs does every 100 commits)
    is read instead of the commits before it; a version before the checkpoint is still
    counted from its commits; a missing commit is an error, not a wrong count."""
    import courier_common

    now = datetime.now(timezone.utc)
    counts = []
    for seed in (16, 17, 18):
        send(local_env["api"], make_positions(2, 4, now - timedelta(hours=30 - 12 * (seed - 16)), seed=seed))
        report = compactor(local_env, "run")
        counts.append((report["table_version"], courier_common.lake_rows_by_date(str(local_env["table"]), report["table_version"])))
    table = str(local_env["table"])
    code = ("import os, sys\nfrom deltalake import DeltaTable\nDeltaTable(sys.argv[1]).create_checkpoint()\n"
            "sys.stdout.flush(); os._exit(0)\n")  # fmt: skip
    subprocess.run([demo_venv_python(), "-c", code, table], check=True, capture_output=True)
    log_dir = local_env["table"] / "_delta_log"
    assert list(log_dir.glob("*.checkpoint.parquet"))
    for version, expected in counts:
        assert courier_common.lake_rows_by_date(table, version) == expected
    # The checkpoint, not the commits, gives the newest version: hide the commits it covers.
    last = counts[-1][0]
    for v in range(1, last + 1):
        (log_dir / f"{v:020d}.json").rename(log_dir / f"{v:020d}.json.hidden")
    assert courier_common.lake_rows_by_date(table, last) == counts[-1][1] == delta_rows_by_date(local_env["table"])
    with pytest.raises(ValueError, match="lacks commit 1"):
        courier_common.lake_rows_by_date(table, counts[0][0])


def test_a_backfill_of_several_intervals_loads_every_position_once(dagbag, local_env):
    """Runs of three past intervals, oldest first (as a backfill runs them), with positions
    arriving between them: each loads what the compactor committed since the ledger's mark,
    whatever its interval; the last finds nothing; every position is in the warehouse once.
    (Backfill runs side by side: tests/test_sql.py, concurrent DAG runs.)"""
    now = datetime.now(timezone.utc)
    acked = send(local_env["api"], make_positions(3, 5, now - timedelta(hours=4), seed=23))
    first = run_dag(dagbag, this_hour() - timedelta(hours=3))
    acked |= send(local_env["api"], make_positions(3, 5, now - timedelta(hours=3), seed=24))
    second = run_dag(dagbag, this_hour() - timedelta(hours=2))
    third = run_dag(dagbag, this_hour() - timedelta(hours=1))
    for dag_run in (first, second, third):
        assert dag_run.state == "success", states(dag_run)
    assert fact_event_ids(local_env["db"]) == sorted(acked)
    with psycopg.connect(local_env["db"]) as conn:
        by_run = conn.execute("SELECT dag_run_id, COUNT(*) FROM courier.load_ledger GROUP BY 1").fetchall()
    assert dict(by_run) == {first.run_id: 1, second.run_id: 1}
    assert hourly_ledger_reconciles(local_env["db"])
