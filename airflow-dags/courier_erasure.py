"""
### courier_erasure

Erase couriers' positions from every tier the platform stores them in, on a data
subject's request (LGPD Art. 18, GDPR Art. 17), and record it in the **erasure ledger**
of the warehouse. Triggered, never scheduled, with the params:

| param | what |
|---|---|
| `courier_ids` | the couriers to erase (a list of ids; at least one) |
| `request_id` | optional: the request's id; default `erasure-<the DAG run id>`, the same on every retry of the run. A new run with the same `request_id` finishes what an earlier run left (the ledger says which tiers are done) and removes nothing twice |

**Tiers**, each done once per request, each recorded in `courier.erasure_tiers`:

| task | tier | what it does |
|---|---|---|
| `migrate_warehouse` | | applies the warehouse migrations not applied yet (as the hourly DAG does; V005 holds the ledger) |
| `register_request` | | records the request and its couriers in `courier.erasure_requests` / `courier.erasure_couriers` (a rerun with the same id must name the same couriers) |
| `choose_lake` | | the local or the ECS compactor, by mode (either does nothing when the ledger has the lake tier done) |
| `erase_local` / `erase_ecs_command` + `erase_ecs` | `lake`, `dead_letters` | `compactor erase --request-id R --courier-id C ...` (a local process, or the compactor ECS task in AWS mode): records the request under `<table>/_erasure/R.json` (later compactor runs skip those couriers while their positions are still in the stream), rewrites the Delta files that hold their rows in one commit without them (no deletion vectors: every reader and COPY manifest stays valid), rewrites the dead-letter files without their lines; idempotent per request id. Its JSON report is written to `--output-uri` and read from there |
| `record_lake` | `lake`, `dead_letters` | records both tiers from the report: rows removed, files rewritten, the erase commit's table version, and the vacuum deadline of the old files (`old_files_deleted_by`) |
| `erase_warehouse` | `warehouse` | one transaction (`sql/erasure_warehouse.sql`) after `LOCK courier.load_ledger`: deletes the couriers' rows from `courier.positions` and staging and their `courier_daily` rows, recomputes the `positions_hourly` hours they were in, enters the erase commit in the load ledger (so the daily lake-versus-warehouse check still reconciles) and records the tier. It waits (fails and is retried) until the warehouse has loaded every compactor run committed before the erase commit: the manifests of those runs still name the old files, so loading one later would bring the rows back |
| `erase_live_store` | `live_store` | `DELETE /v1/couriers/{id}/position` on ingest-api with a dispatch key (connection `courier_ingest_api`: host = base URL, password = the key): the courier's latest position and nearby-index entries leave the live store (ingest-api answers 204 whether or not one was there: the tier counts the couriers erased). Without that connection: in local mode the tier is recorded as skipped ("no live store configured"); in AWS mode the task fails |
| `complete` | | sets `completed_at` when every tier is done (or skipped) and fails naming the missing ones otherwise |

`courier.erasure_status` (a view) lists every request with its counts per tier and
`complete` / `pending`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from airflow.sdk import Param, chain, dag, task

from courier_common import (
    AWS_CONN_ID,
    DAG_DIR,
    WAREHOUSE_CONN_ID,  # noqa: F401  (re-exported for tests and tools)
    CourierAlert,
    lake_rows_by_date,
    lake_runs_between,
    local_mode,
    local_paths,
    migrate_warehouse_now,
    read_report,
    report_prefix,
    report_uri,
    run_compactor,
    setting,
    warehouse_hook,
)
from courier_common import ecs_settings as _ecs_settings

log = logging.getLogger(__name__)

DAG_ID = "courier_erasure"
SQL_DIR = DAG_DIR / "sql"
TIERS = ("lake", "dead_letters", "warehouse", "live_store")
INGEST_CONN_ID = "courier_ingest_api"
NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
ERASE_TIMEOUT = timedelta(hours=2)
DEFAULT_TIMEOUT = timedelta(minutes=20)
REPORT_KEYS = ("request_id", "courier_ids", "lake_rows_removed", "lake_files_rewritten", "table_version",
               "dead_letter_lines_removed", "dead_letter_files_rewritten", "old_files_deleted_by")  # fmt: skip


def erase_commits(report: dict) -> list[int]:
    """The table versions of the request's erase commits (`lake_commits`; a report without
    them: its `table_version` when it rewrote files)."""
    if report.get("lake_commits") is not None:
        return sorted(int(v) for v in report["lake_commits"])
    if int(report.get("lake_files_rewritten") or 0) > 0 and report.get("table_version") is not None:
        return [int(report["table_version"])]
    return []
COURIER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:=+-]{1,128}$")


def request_id_of(params: dict, run_id: str) -> str:
    """The request id: the param, else `erasure-<DAG run id>` (stable across retries)."""
    given = (params or {}).get("request_id")
    rid = str(given).strip() if given else "erasure-" + re.sub(r"[^A-Za-z0-9._:=+-]", "_", run_id)
    rid = rid[:128]
    if not REQUEST_ID.match(rid):
        raise ValueError(f"request_id {rid!r}: 1 to 128 characters of A-Z a-z 0-9 . _ : = + -; pass another one")
    return rid


def courier_ids_of(params: dict) -> list[str]:
    """The courier ids of the request, validated, deduplicated, sorted."""
    raw = (params or {}).get("courier_ids")
    if isinstance(raw, str):
        raw = [c for c in re.split(r"[,\s]+", raw) if c]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError("courier_ids: give a non-empty list of courier ids (conf {\"courier_ids\": [\"...\"]})")
    bad = [c for c in raw if not isinstance(c, str) or not COURIER_ID.match(c)]
    if bad:
        raise ValueError(f"courier_ids: {bad} are not courier ids (1 to 64 characters of A-Z a-z 0-9 . _ : @ -)")
    return sorted(set(raw))


def parse_erase_report(raw, request_id: str, courier_ids: list[str]) -> dict:
    """The JSON report of `compactor erase`, validated against the request."""
    report = dict(json.loads(raw) if isinstance(raw, (str, bytes)) else raw)
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise ValueError(f"compactor erase report lacks {missing}: {report}")
    if report["request_id"] != request_id:
        raise ValueError(f"compactor erase report is for request {report['request_id']!r}, not {request_id!r}")
    if sorted(set(report["courier_ids"])) != courier_ids:
        raise ValueError(f"compactor erase report names couriers {report['courier_ids']}, the request {courier_ids}")
    return report


def _utc_wall(value) -> datetime | None:
    """An RFC 3339 time (or epoch seconds) as naive UTC (the warehouse's TIMESTAMPs)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed).replace(tzinfo=None)


def dead_letter_counts(report: dict, request_id: str) -> tuple[int, dict]:
    """The dead-letter lines removed by the request. The report counts those of its own
    attempt (an attempt after a crash that followed the rewrite finds none); the
    compactor's own record of the request (`<table>/_erasure/<request>.json`) adds up every
    attempt's, so it is read when this worker can (local mode; in AWS mode the MWAA role
    may not read the table, and the report's count is taken, said so in the detail)."""
    detail = {"files_rewritten": int(report["dead_letter_files_rewritten"]),
              "lines_unattributable": int(report.get("dead_letter_lines_unattributable") or 0),
              "source": "this attempt's report"}  # fmt: skip
    lines = int(report["dead_letter_lines_removed"])
    try:
        recorded = read_report(f"{lake_table_uri().rstrip('/')}/_erasure/{request_id}.json")
        tier = (recorded.get("tiers") or {}).get("dead_letters") or {}
        details = tier.get("details") or tier
        if "lines_removed" in details:
            lines = int(details["lines_removed"])
            detail.update(files_rewritten=int(details.get("files_rewritten", detail["files_rewritten"])),
                          source="the compactor's record of the request (every attempt)")  # fmt: skip
    except Exception as e:  # noqa: BLE001  (unreadable: the report's count, said so)
        log.warning("the compactor's record of request %s is not readable here (%s): the dead-letter count is "
                    "this attempt's", request_id, e)  # fmt: skip
    return lines, detail


def lake_table_uri() -> str:
    uri = local_paths()["table_uri"] if local_mode() else setting("table_uri")
    if not uri:
        raise ValueError("no table_uri setting: cannot read the lake's Delta log")
    return uri


def erase_args(request_id: str, courier_ids: list[str], vacuum_retention_hours: str | int = 168) -> list[str]:
    """`erase` and its arguments (the ECS task's environment names the table and the
    dead letters; local mode adds them). The vacuum retention is the maintenance DAG's
    (vacuum_retention_hours), so the report's `old_files_deleted_by` is this platform's
    deadline: the erase commit + the retention + a day (vacuum runs daily)."""
    args = ["erase", "--request-id", request_id, "--vacuum-retention-hours", str(int(vacuum_retention_hours))]
    for c in courier_ids:
        args += ["--courier-id", c]
    return args


# --- the ledger ------------------------------------------------------------------------------


def tiers_done(cur, request_id: str) -> dict[str, dict]:
    cur.execute("SELECT tier, status, rows_removed, detail FROM courier.erasure_tiers WHERE request_id = %s",
                (request_id,))  # fmt: skip
    return {t: {"status": s, "rows_removed": int(n), "detail": d} for t, s, n, d in cur.fetchall()}


def _with_cursor(fn):
    """Run `fn(cur)` in one transaction of the courier_warehouse connection."""
    conn = warehouse_hook().get_conn()
    try:
        cur = conn.cursor()
        try:
            out = fn(cur)
        finally:
            cur.close()
        conn.commit()
        return out
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()


def register(cur, request_id: str, courier_ids: list[str], run_id: str) -> bool:
    """Record the request (new: True), or check that a known one names the same couriers."""
    cur.execute("LOCK courier.erasure_requests")
    cur.execute("SELECT courier_id FROM courier.erasure_couriers WHERE request_id = %s ORDER BY courier_id",
                (request_id,))  # fmt: skip
    known = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT COUNT(*) FROM courier.erasure_requests WHERE request_id = %s", (request_id,))
    if cur.fetchone()[0]:
        if known != courier_ids:
            raise ValueError(f"erasure request {request_id} names couriers {known}, this run {courier_ids}: "
                             "rerun it with the same couriers, or use another request_id")  # fmt: skip
        return False
    cur.execute("INSERT INTO courier.erasure_requests (request_id, courier_count, dag_run_id) VALUES (%s, %s, %s)",
                (request_id, len(courier_ids), run_id))  # fmt: skip
    for c in courier_ids:
        cur.execute("INSERT INTO courier.erasure_couriers (request_id, courier_id) VALUES (%s, %s)", (request_id, c))
    return True


def record_tier(cur, request_id: str, tier: str, status: str, rows_removed: int, detail: dict, run_id: str) -> bool:
    """Insert the tier's ledger row unless it is there (False: it was)."""
    cur.execute("SELECT COUNT(*) FROM courier.erasure_tiers WHERE request_id = %s AND tier = %s", (request_id, tier))
    if cur.fetchone()[0]:
        return False
    cur.execute("INSERT INTO courier.erasure_tiers (request_id, tier, status, rows_removed, detail, dag_run_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (request_id, tier, status, int(rows_removed), json.dumps(detail, sort_keys=True), run_id))  # fmt: skip
    return True


def lake_removed_by_date(table_uri: str, erase_versions: list[int]) -> dict[str, int]:
    """Rows the erase commits removed per event_date: for each, the Delta log's counts at
    the version before it minus at it, summed."""
    removed: Counter = Counter()
    for v in erase_versions:
        before, after = lake_rows_by_date(table_uri, v - 1), lake_rows_by_date(table_uri, v)
        delta = {d: before.get(d, 0) - after.get(d, 0) for d in set(before) | set(after)}
        if any(n < 0 for n in delta.values()):
            raise ValueError(f"table version {v} adds rows ({delta}): it is not an erase commit")
        removed.update(delta)
    return {d: n for d, n in sorted(removed.items()) if n}


def render_warehouse_sql(request_id: str, run_id: str, erase_versions: list[int], lake_dates: dict[str, int],
                         now: datetime) -> str:  # fmt: skip
    import jinja2

    versions = sorted(erase_versions)
    return jinja2.Template((SQL_DIR / "erasure_warehouse.sql").read_text()).render(
        request_id=request_id, run_id=run_id, erase_versions=versions, erase_version=versions[-1] if versions else None,
        lake_dates=sorted(lake_dates.items()), now=now.strftime("%Y-%m-%d %H:%M:%S"),
    )  # fmt: skip


def erase_from_warehouse(cur, request_id: str, run_id: str, table_uri: str) -> dict:
    """The warehouse tier in the caller's transaction (see erasure_warehouse.sql)."""
    from courier_common import sql_statements

    cur.execute("LOCK courier.load_ledger")
    done = tiers_done(cur, request_id)
    if "warehouse" in done:
        log.info("warehouse tier of %s done already: %s", request_id, done["warehouse"])
        return {**done["warehouse"], "already_done": True}
    if "lake" not in done:
        raise ValueError(f"the lake tier of {request_id} is not done: the warehouse follows the lake")
    commits = [int(v) for v in json.loads(done["lake"]["detail"]).get("commits") or []]
    lake_dates: dict[str, int] = {}
    if commits:
        cur.execute("SELECT COALESCE(MAX(table_version), 0) FROM courier.load_ledger")
        loaded = int(cur.fetchone()[0])
        waiting = [v for v in lake_runs_between(table_uri, loaded, max(commits)) if v not in commits]
        if waiting:
            raise RuntimeError(
                f"the warehouse has loaded up to table version {loaded}, but compactor runs {waiting} were committed "
                f"before the erase commit(s) {commits} and their manifests name the old files: waiting for the hourly "
                "DAG to load them (this task is retried), else they would bring erased rows back")  # fmt: skip
        lake_dates = lake_removed_by_date(table_uri, commits)
        cur.execute(f"SELECT table_version FROM courier.load_ledger WHERE table_version IN ({', '.join(['%s'] * len(commits))})",
                    tuple(commits))  # fmt: skip
        clash = [r[0] for r in cur.fetchall()]
        if clash:
            raise ValueError(f"table versions {clash} are in courier.load_ledger already: not erase commits")
    sql = render_warehouse_sql(request_id, run_id, commits, lake_dates, datetime.now(timezone.utc))
    for statement in sql_statements(sql):
        cur.execute(statement)
    return tiers_done(cur, request_id)["warehouse"]


def live_store_target():
    """(base URL, dispatch key) from the connection `courier_ingest_api`, or None."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(INGEST_CONN_ID)
    except Exception:  # AirflowNotFoundException: not configured
        return None
    host = conn.host or ""
    if "://" not in host:
        scheme = (conn.extra_dejson or {}).get("scheme") or ("https" if conn.conn_type == "https" else "http")
        host = f"{scheme}://{host}"
    if conn.port:
        host = f"{host.rstrip('/')}:{conn.port}"
    if not conn.password:
        raise ValueError(f"connection {INGEST_CONN_ID} has no password: set it to a dispatch API key of ingest-api")
    return host.rstrip("/"), conn.password


def delete_live_position(base_url: str, key: str, courier_id: str, timeout_s: float = 30) -> None:
    """`DELETE /v1/couriers/{courier_id}/position` with a dispatch key: ingest-api erases the
    courier's latest position and nearby-index entries from its live store and answers
    204 whether or not anything was there (idempotent). Anything else fails the task
    (it is retried): a 404 is an ingest-api without the route, a 401 a wrong key."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{base_url}/v1/couriers/{urllib.parse.quote(courier_id, safe='')}/position"
    req = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            if r.status not in (200, 204):
                raise RuntimeError(f"DELETE {url} answered {r.status}, expected 204")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"DELETE {url} answered {e.code} ({e.read()[:300]!r}): check the connection "
                           f"{INGEST_CONN_ID} (a dispatch key of an ingest-api with the erase route)") from None


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    on_failure_callback=CourierAlert("run failed"),
    tags=["courier", "erasure", "lgpd"],
    doc_md=__doc__,
    params={
        "courier_ids": Param([], type="array", description="the couriers to erase"),
        "request_id": Param(None, type=["null", "string"],
                            description="the request's id (default: erasure-<DAG run id>); reuse it to finish a request"),
    },  # fmt: skip
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": DEFAULT_TIMEOUT,
        "on_failure_callback": CourierAlert("task failed"),
    },
)
def courier_erasure():
    @task
    def migrate_warehouse() -> list:
        """The warehouse migrations not applied yet (the ledger tables: V005), as the hourly DAG."""
        return migrate_warehouse_now()

    @task
    def register_request(params=None, dag_run=None) -> dict:
        rid, couriers = request_id_of(params, dag_run.run_id), courier_ids_of(params)
        new = _with_cursor(lambda cur: register(cur, rid, couriers, dag_run.run_id))
        log.info("%s erasure request %s: couriers %s", "new" if new else "known", rid, couriers)
        return {"request_id": rid, "courier_ids": couriers}

    @task.branch
    def choose_lake() -> str:
        return "erase_local" if local_mode() else "erase_ecs_command"

    def lake_done(rid: str) -> bool:
        done = _with_cursor(lambda cur: tiers_done(cur, rid))
        if "lake" in done and "dead_letters" in done:
            log.info("lake and dead-letter tiers of %s done already: %s", rid, {t: done[t] for t in TIERS if t in done})
            return True
        return False

    @task(execution_timeout=ERASE_TIMEOUT, multiple_outputs=False)
    def erase_local(request: dict, dag_run=None, ti=None) -> dict | None:
        if lake_done(request["request_id"]):
            return None
        p = local_paths()
        args = [*erase_args(request["request_id"], request["courier_ids"], setting("vacuum_retention_hours")), "--table-uri", p["table_uri"]]
        if setting("dead_letter_uri"):
            args += ["--dead-letter-uri", setting("dead_letter_uri")]
        uri = report_uri(DAG_ID, dag_run.run_id, ti.task_id, ti.try_number)
        return run_compactor(*args, output_uri=uri, timeout_s=ERASE_TIMEOUT.total_seconds())

    @task(multiple_outputs=False)
    def erase_ecs_command(request: dict, dag_run=None) -> dict:
        """AWS mode: the ECS container override of `erase_ecs` (the couriers are known at
        run time only); its report goes to `<reports>/courier_erasure/<run>/erase_ecs/`."""
        from airflow.exceptions import AirflowSkipException

        if lake_done(request["request_id"]):
            raise AirflowSkipException("the lake and dead-letter tiers are done: no compactor task")
        ecs = _ecs_settings()
        uri = f"{report_prefix(DAG_ID, dag_run.run_id, 'erase_ecs')}/request.json"
        command = ["--output-uri", uri, *erase_args(request["request_id"], request["courier_ids"], setting("vacuum_retention_hours"))]
        return {**ecs, "overrides": {"containerOverrides": [{"name": ecs["container"], "command": command}]}}

    @task(trigger_rule=NONE_FAILED_MIN_ONE_SUCCESS)
    def record_lake(request: dict, dag_run=None, ti=None) -> dict:
        """Record the lake and dead-letter tiers from the compactor's report (the local
        task's XCom, read from its report file; or the ECS task's report object)."""
        rid, couriers = request["request_id"], request["courier_ids"]
        done = _with_cursor(lambda cur: tiers_done(cur, rid))
        if "lake" in done and "dead_letters" in done:
            return {t: done[t] for t in ("lake", "dead_letters")}
        if local_mode():
            raw = ti.xcom_pull(task_ids="erase_local")
        else:
            raw = read_report(f"{report_prefix(DAG_ID, dag_run.run_id, 'erase_ecs')}/request.json")
        if raw is None:
            raise ValueError(f"no compactor erase report for {rid} in this DAG run")
        report = parse_erase_report(raw, rid, couriers)
        log.info("compactor erase report: %s", json.dumps(report))
        lake = {"commits": erase_commits(report), "table_version": report["table_version"],
                "files_rewritten": int(report["lake_files_rewritten"]),
                "old_files_deleted_by": report["old_files_deleted_by"]}  # fmt: skip
        dead_lines, dead = dead_letter_counts(report, rid)

        def write(cur):
            record_tier(cur, rid, "lake", "done", int(report["lake_rows_removed"]), lake, dag_run.run_id)
            record_tier(cur, rid, "dead_letters", "done", dead_lines, dead, dag_run.run_id)
            deadline = _utc_wall(report["old_files_deleted_by"])
            cur.execute("UPDATE courier.erasure_requests SET vacuum_deadline = %s WHERE request_id = %s",
                        (deadline, rid))  # fmt: skip
            return tiers_done(cur, rid)

        done = _with_cursor(write)
        return {t: done[t] for t in ("lake", "dead_letters")}

    @task(retries=12, retry_delay=timedelta(minutes=10))
    def erase_warehouse(request: dict, dag_run=None) -> dict:
        table = lake_table_uri()
        tier = _with_cursor(lambda cur: erase_from_warehouse(cur, request["request_id"], dag_run.run_id, table))
        log.info("warehouse tier of %s: %s", request["request_id"], tier)
        return tier

    @task
    def erase_live_store(request: dict, dag_run=None) -> dict:
        rid = request["request_id"]
        done = _with_cursor(lambda cur: tiers_done(cur, rid))
        if "live_store" in done:
            return done["live_store"]
        target = live_store_target()
        if target is None:
            if not local_mode():
                raise ValueError(f"no connection {INGEST_CONN_ID}: set it to ingest-api's base URL with a dispatch "
                                 "API key as its password (AWS mode erases the live position store too)")  # fmt: skip
            status, removed, detail = "skipped", 0, {"reason": "no live store configured"}
        else:
            base, key = target
            for c in request["courier_ids"]:
                delete_live_position(base, key, c)
            # ingest-api answers 204 whether or not a position was there: the count is of couriers erased.
            status, removed, detail = "done", len(request["courier_ids"]), {"ingest_api": base,
                                                                             "couriers_erased": len(request["courier_ids"])}
        _with_cursor(lambda cur: record_tier(cur, rid, "live_store", status, removed, detail, dag_run.run_id))
        log.info("live store tier of %s: %s, %d removed %s", rid, status, removed, detail)
        return _with_cursor(lambda cur: tiers_done(cur, rid))["live_store"]

    @task(retries=0)
    def complete(request: dict) -> dict:
        rid = request["request_id"]

        def finish(cur):
            done = tiers_done(cur, rid)
            missing = [t for t in TIERS if t not in done]
            if missing:
                raise ValueError(f"erasure request {rid} is not complete: tiers {missing} are not done")
            cur.execute("UPDATE courier.erasure_requests SET completed_at = %s WHERE request_id = %s"
                        " AND completed_at IS NULL",
                        (datetime.now(timezone.utc).replace(tzinfo=None), rid))  # fmt: skip
            cur.execute("SELECT request_id, status, completed_at, vacuum_deadline, lake_rows_removed,"
                        " dead_letter_lines_removed, warehouse_rows_removed, live_store_couriers_erased"
                        " FROM courier.erasure_status WHERE request_id = %s", (rid,))  # fmt: skip
            names = [d[0] for d in cur.description]
            return {k: (v.isoformat() if isinstance(v, datetime) else int(v) if isinstance(v, Decimal) else v)
                    for k, v in zip(names, cur.fetchone())}  # fmt: skip

        status = _with_cursor(finish)
        log.info("erasure request %s complete: %s (old lake files deleted by vacuum by %s)",
                 rid, status, status["vacuum_deadline"])  # fmt: skip
        return status

    request = register_request()
    chain(migrate_warehouse(), request)
    branch = choose_lake()
    local = erase_local(request)
    command = erase_ecs_command(request)
    erase_ecs = ecs_erase_task(command)
    lake = record_lake(request)  # after register_request too: runs when both erase paths are skipped
    warehouse = erase_warehouse(request)
    live = erase_live_store(request)
    chain(request, branch, [local, command])
    chain(command, erase_ecs, lake)
    chain(local, lake, warehouse)
    chain([warehouse, live], complete(request))


def ecs_erase_task(command):
    """AWS mode: `compactor --output-uri <report> erase ...` as the compactor ECS task, its
    settings and container override computed at run time (erase_ecs_command: the couriers
    are known then only); reattaches after a worker restart, deferred, bounded by its
    timeout (as courier_common.ecs_compactor_task)."""
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    from courier_common import ECS_WAITER_DELAY_S

    return EcsRunTaskOperator(
        task_id="erase_ecs",
        aws_conn_id=AWS_CONN_ID,
        cluster=command["cluster"],
        task_definition=command["task_definition"],
        launch_type="FARGATE",
        network_configuration=command["network_configuration"],
        container_name=command["container"],
        overrides=command["overrides"],
        awslogs_group=command["awslogs_group"],
        awslogs_stream_prefix=command["awslogs_stream_prefix"],
        reattach=True,
        deferrable=True,
        waiter_delay=ECS_WAITER_DELAY_S,
        waiter_max_attempts=max(1, int(ERASE_TIMEOUT.total_seconds() // ECS_WAITER_DELAY_S)),
        execution_timeout=ERASE_TIMEOUT,
        do_xcom_push=False,
    )


courier_erasure()
