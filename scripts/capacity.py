#!/usr/bin/env python3
"""Capacity and cost model of the platform, from the figures measured in
docs/performance.md (standard library only).

    scripts/capacity.py --couriers 20000 --interval 5 --positions-per-request 1
    scripts/capacity.py --couriers 20000 --interval 5 --json
    scripts/capacity.py --env prod            # the fleet prod is sized for
    scripts/capacity.py --markdown 1000 20000 200000   # the table in docs/deploy.md

Prints the Kinesis shards, the ingest-api tasks (size, min/max, the
ALBRequestCountPerTarget target), the compactor task size and its hourly
work, and the monthly cost of each AWS piece. terraform/envs/*/terraform.tfvars
follow from `--env dev` and `--env prod` (tests/infra/test_capacity.py checks
that they do).

The model, and where each number comes from:

- positions/s R = couriers / interval; requests/s Q = R / positions per request.
- ingest-api CPU per request = A + B x positions, fitted to the two
  server-bound runs of docs/performance.md ("lean generator", 2 cores):
  26,775 single-position requests/s and 702,455 positions/s in batches of
  100. A task is sized to run at TARGET_UTILIZATION of that.
- Kinesis: every ingest task batches per shard by group commit (linger_ms
  is 0 by default): one record per (task, shard) in flight, and what
  arrives during that PutRecords round trip goes out as the next record.
  Positions per record = rate per (task, shard) x PUT_ROUND_TRIP_S, at least
  1 and at most RECORD_MAX_POSITIONS. Checked against the Kinesis benchmark
  run (moto_server, 1 task, 4 shards): 2,684 positions/s in records of 8.3
  positions, with a round trip of half its 23 ms p50 request latency (a
  request waits for the write in flight, then for its own). Record bytes =
  RECORD_OVERHEAD + 30 B per position (30 MB per million positions,
  aggregated zstd). Shards: enough for 1 MB/s and 1,000 records/s each,
  with STREAM_HEADROOM.
- compactor: 750 K rows/s per vCPU (1.5 M rows/s on 2 cores over multi-run
  backlogs), peak RSS ~235 MiB at its defaults, flat in the backlog; one run
  an hour.
- lake: 21.1 Parquet bytes per row.
- position store (ElastiCache, the shared latest positions, geo index and
  live feed of ingest-api): STORE_BYTES_PER_COURIER per courier (a hash with
  the position as ~330 B of JSON, its key and TTL, plus a member in the geo
  set and in the last-seen set), twice that as headroom plus
  STORE_BASE_MIB; the smallest node of the environment's family with that
  memory and the network for the live feed (every position published once
  and relayed to each task, ~160 B each). Replicas as the environment says.
- prices: eu-west-1 list prices as in docs/deploy.md (USD, 730 h/month).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600

# --- measured (docs/performance.md) ------------------------------------------
SINGLE_REQUESTS_PER_S_2CPU = 26_775      # lean generator, single positions, ingest-api
BATCH_POSITIONS_PER_S_2CPU = 702_455     # lean generator, batches of 100, ingest-api
BATCH_SIZE_MEASURED = 100
STREAM_BYTES_PER_POSITION = 30.0         # 30 MB per million positions (aggregated zstd)
RECORD_OVERHEAD_BYTES = 300              # Avro container header, sync marker, partition key
COMPACTOR_ROWS_PER_S_PER_VCPU = 750_000  # 1.5 M rows/s on 2 cores (lower end of the runs)
PARQUET_BYTES_PER_ROW = 21.1
STORE_BYTES_PER_COURIER = 700            # estimate: hash + JSON + geo and last-seen members
STORE_BASE_MIB = 100                     # engine, buffers, replication backlog
LIVE_BYTES_PER_POSITION = 160            # one server-sent event frame

# --- ingest-api defaults (services/ingest-api/src/config.rs) ------------------
RECORD_MAX_POSITIONS = 5000  # linger_ms = 0: group commit only

# --- assumed -------------------------------------------------------------------
# One PutRecords call to Kinesis from a task in the same region; the running
# service measures it (ingest_sink_put_duration_seconds). A shorter round
# trip means smaller records, more records/s and PUT units: rerun the model
# with the measured value.
PUT_ROUND_TRIP_S = 0.020

# --- policy --------------------------------------------------------------------
TARGET_UTILIZATION = 0.5     # ingest tasks run at half their measured capacity
PEAK_FACTOR = 2              # max tasks = 2 x the steady count
STREAM_HEADROOM = 2.0        # shards for twice the steady write rate
COMPACTOR_RUN_BUDGET_S = 600 # an hour's positions compacted in at most 10 min
SHARD_BYTES_PER_S = 1_000_000
SHARD_RECORDS_PER_S = 1000
FARGATE_SIZES = [(256, 512), (512, 1024), (1024, 2048), (2048, 4096), (4096, 8192)]

# --- prices (USD, eu-west-1, as in docs/deploy.md) ----------------------------
PRICE = {
    "fargate_vcpu_hour": 0.0405,
    "fargate_gb_hour": 0.0045,
    "kinesis_shard_hour": 0.015,
    "kinesis_extended_retention_shard_hour": 0.020,
    "kinesis_put_units_million": 0.014,
    "kinesis_on_demand_stream_hour": 0.04,
    "kinesis_on_demand_gb_in": 0.08,
    "kinesis_on_demand_gb_out": 0.04,
    "alb_hour": 0.0225,
    "alb_lcu_hour": 0.008,
    "waf_acl_month": 5.0,
    "waf_rule_month": 1.0,
    "waf_requests_million": 0.60,
    "nat_hour": 0.048,
    "nat_gb": 0.048,
    "endpoint_hour": 0.011,
    "endpoint_gb": 0.01,
    "redshift_rpu_hour": 0.375,
    "mwaa_small_hour": 0.49,
    "mwaa_medium_hour": 0.74,
    "mwaa_medium_worker_hour": 0.11,
    "s3_gb_month": 0.023,
    "kms_key_month": 1.0,
    "cloudwatch_metric_month": 0.30,
    "cloudwatch_alarm_month": 0.10,
}
# ElastiCache node types: (name, memory GiB, sustained network Gbit/s, USD per node-hour).
STORE_NODES = {
    "t4g": [("cache.t4g.micro", 0.5, 0.064, 0.018), ("cache.t4g.small", 1.37, 0.128, 0.036),
            ("cache.t4g.medium", 3.09, 0.256, 0.073)],
    "m7g": [("cache.m7g.large", 6.38, 0.937, 0.176), ("cache.m7g.xlarge", 12.7, 1.876, 0.352),
            ("cache.m7g.2xlarge", 26.3, 3.75, 0.704), ("cache.m7g.4xlarge", 52.6, 7.5, 1.408)],
}
WAF_RULES = 4
INTERFACE_ENDPOINTS = 6
AZS = 3
KMS_KEYS = 9
EMF_METRICS = 60          # ingest_* series per ServiceName dimension set
ALARMS = 11
REQUEST_BYTES_BASE = 400  # headers, TLS framing
REQUEST_BYTES_PER_POSITION = 130
REDSHIFT_BUSY_MINUTES_PER_HOUR = 5

# The fleets the environments are sized for: (couriers, interval s, positions per request).
DESIGN = {"dev": (1_000, 5.0, 1), "prod": (20_000, 5.0, 1)}
ENV_SETTINGS = {
    "dev": {"stream_mode": "ON_DEMAND", "retention_hours": 24, "nat_gateways": 1, "mwaa": "small",
            "mwaa_workers": 1, "redshift_base_rpu": 8, "min_tasks": 1, "task_cpu": 256,
            "store_nodes": "t4g", "store_replicas": 0},
    "prod": {"stream_mode": "PROVISIONED", "retention_hours": 168, "nat_gateways": 3, "mwaa": "medium",
             "mwaa_workers": 2, "redshift_base_rpu": 32, "min_tasks": 2, "task_cpu": 1024,
             "store_nodes": "m7g", "store_replicas": 1},
}


def cpu_seconds_per_request(positions_per_request: float) -> float:
    """A + B x P, fitted to the two measured points (per vCPU)."""
    single = 2 / SINGLE_REQUESTS_PER_S_2CPU                                    # A + B
    batch = 2 / (BATCH_POSITIONS_PER_S_2CPU / BATCH_SIZE_MEASURED)             # A + 100 B
    b = (batch - single) / (BATCH_SIZE_MEASURED - 1)
    a = single - b
    return a + b * positions_per_request


def stream_load(
    positions_per_s: float, tasks: int, shards: int, round_trip_s: float = PUT_ROUND_TRIP_S
) -> tuple[float, float, float]:
    """(positions per record, records/s, bytes/s): each task batches per shard
    by group commit, so a record holds what one (task, shard) batcher
    receives during the write before it, one PutRecords round trip; at least
    one position, at most RECORD_MAX_POSITIONS."""
    per_batcher = positions_per_s / (tasks * shards)
    per_record = min(RECORD_MAX_POSITIONS, max(1.0, per_batcher * round_trip_s))
    records_per_s = positions_per_s / per_record
    bytes_per_s = records_per_s * RECORD_OVERHEAD_BYTES + positions_per_s * STREAM_BYTES_PER_POSITION
    return per_record, records_per_s, bytes_per_s


def memory_for(cpu: int) -> int:
    return dict(FARGATE_SIZES)[cpu]


def model(couriers: int, interval_s: float, positions_per_request: float, env: str = "prod") -> dict:
    if couriers < 1 or interval_s <= 0 or positions_per_request < 1:
        raise ValueError("couriers >= 1, interval > 0 and positions per request >= 1")
    settings = ENV_SETTINGS[env]
    positions_per_s = couriers / interval_s
    requests_per_s = positions_per_s / positions_per_request

    # ingest-api
    task_cpu = settings["task_cpu"]
    vcpu = task_cpu / 1024
    capacity_rps = vcpu / cpu_seconds_per_request(positions_per_request)  # at 100 % of the task
    target_rps = capacity_rps * TARGET_UTILIZATION
    steady_tasks = max(1, math.ceil(requests_per_s / target_rps))
    min_tasks = max(settings["min_tasks"], steady_tasks)
    max_tasks = max(min_tasks + 1, math.ceil(steady_tasks * PEAK_FACTOR))
    requests_per_target_per_minute = int(target_rps * 60)

    # Kinesis: shards for bytes and records (more shards: smaller records).
    shards = 1
    while True:
        per_record, records_per_s, bytes_per_s = stream_load(positions_per_s, min_tasks, shards)
        needed = math.ceil(STREAM_HEADROOM * max(bytes_per_s / SHARD_BYTES_PER_S, records_per_s / SHARD_RECORDS_PER_S))
        if needed <= shards:
            break
        shards = needed
    record_bytes = RECORD_OVERHEAD_BYTES + per_record * STREAM_BYTES_PER_POSITION
    put_units_per_s = records_per_s * math.ceil(record_bytes / 25_000)

    # compactor: one run an hour (in bounded runs of 4 M positions each)
    positions_per_hour = positions_per_s * 3600
    compactor_cpu = next(
        (cpu for cpu, _ in FARGATE_SIZES if cpu >= 1024
         and positions_per_hour / (COMPACTOR_ROWS_PER_S_PER_VCPU * cpu / 1024) <= COMPACTOR_RUN_BUDGET_S),
        FARGATE_SIZES[-1][0],
    )
    compactor_vcpu = compactor_cpu / 1024
    # Two pipeline tasks (decode, encode) use at most 2 vCPUs.
    compactor_seconds = positions_per_hour / (COMPACTOR_ROWS_PER_S_PER_VCPU * min(compactor_vcpu, 2)) + 60
    compactor_memory = max(memory_for(compactor_cpu), 2048)

    # position store: memory for every courier with headroom; network for
    # the live feed published once and relayed to every task at peak.
    store_memory_gib = (2 * couriers * STORE_BYTES_PER_COURIER / 2**20 + STORE_BASE_MIB) / 1024
    store_gbit_s = positions_per_s * LIVE_BYTES_PER_POSITION * (max_tasks + 1) * 8 / 1e9
    store_node = next(
        (n for n in STORE_NODES[settings["store_nodes"]] if n[1] >= store_memory_gib and n[2] >= 2 * store_gbit_s),
        STORE_NODES[settings["store_nodes"]][-1],
    )
    store_nodes = 1 + settings["store_replicas"]

    # costs per month
    gb_per_month_stream = bytes_per_s * SECONDS_PER_MONTH / 1e9
    retention_extra = settings["retention_hours"] > 24
    kinesis_provisioned = shards * HOURS_PER_MONTH * (
        PRICE["kinesis_shard_hour"] + (PRICE["kinesis_extended_retention_shard_hour"] if retention_extra else 0)
    ) + put_units_per_s * SECONDS_PER_MONTH / 1e6 * PRICE["kinesis_put_units_million"]
    kinesis_on_demand = HOURS_PER_MONTH * PRICE["kinesis_on_demand_stream_hour"] + gb_per_month_stream * (
        PRICE["kinesis_on_demand_gb_in"] + PRICE["kinesis_on_demand_gb_out"]
    )
    kinesis = kinesis_provisioned if settings["stream_mode"] == "PROVISIONED" else kinesis_on_demand

    ingest_fargate = min_tasks * HOURS_PER_MONTH * (
        vcpu * PRICE["fargate_vcpu_hour"] + memory_for(task_cpu) / 1024 * PRICE["fargate_gb_hour"]
    )
    compactor_fargate = compactor_seconds / 3600 * HOURS_PER_MONTH * (
        compactor_vcpu * PRICE["fargate_vcpu_hour"] + compactor_memory / 1024 * PRICE["fargate_gb_hour"]
    )

    # ALB LCUs: the largest of new connections (25/s), active connections
    # (3,000 per minute: phones keep theirs open), processed bytes (1 GB/h),
    # rule evaluations (1,000/s beyond 10 free).
    request_bytes = REQUEST_BYTES_BASE + positions_per_request * REQUEST_BYTES_PER_POSITION
    lcu = max(
        couriers / 3000,
        requests_per_s * request_bytes * 3600 / 1e9,
        requests_per_s * 2 / 1000,  # 2 rules evaluated per request
    )  # new connections: negligible, phones keep theirs open (keep-alive > idle timeout)
    alb = HOURS_PER_MONTH * (PRICE["alb_hour"] + lcu * PRICE["alb_lcu_hour"])
    waf = PRICE["waf_acl_month"] + WAF_RULES * PRICE["waf_rule_month"] + requests_per_s * SECONDS_PER_MONTH / 1e6 * PRICE["waf_requests_million"]
    nat = settings["nat_gateways"] * HOURS_PER_MONTH * PRICE["nat_hour"] + 10 * PRICE["nat_gb"]
    endpoints = INTERFACE_ENDPOINTS * AZS * HOURS_PER_MONTH * PRICE["endpoint_hour"] + gb_per_month_stream * PRICE["endpoint_gb"]
    redshift = settings["redshift_base_rpu"] * PRICE["redshift_rpu_hour"] * REDSHIFT_BUSY_MINUTES_PER_HOUR / 60 * HOURS_PER_MONTH
    if settings["mwaa"] == "small":
        mwaa = HOURS_PER_MONTH * PRICE["mwaa_small_hour"]
    else:
        mwaa = HOURS_PER_MONTH * (PRICE["mwaa_medium_hour"] + (settings["mwaa_workers"] - 1) * PRICE["mwaa_medium_worker_hour"])
    lake_gb_per_month = positions_per_s * SECONDS_PER_MONTH * PARQUET_BYTES_PER_ROW / 1e9
    # Storage cost of the first month's data (it grows by this every month).
    other = lake_gb_per_month * PRICE["s3_gb_month"] + KMS_KEYS * PRICE["kms_key_month"] + EMF_METRICS * PRICE["cloudwatch_metric_month"] + ALARMS * PRICE["cloudwatch_alarm_month"]

    costs = {
        "kinesis": kinesis,
        "ecs_fargate_ingest": ingest_fargate,
        "ecs_fargate_compactor": compactor_fargate,
        "alb": alb,
        "waf": waf,
        "nat_gateways": nat,
        "interface_endpoints": endpoints,
        "redshift_serverless": redshift,
        "mwaa": mwaa,
        "elasticache": store_nodes * store_node[3] * HOURS_PER_MONTH,
        "s3_kms_cloudwatch": other,
    }
    costs = {k: round(v, 2) for k, v in costs.items()}
    return {
        "input": {"couriers": couriers, "interval_s": interval_s, "positions_per_request": positions_per_request, "env": env},
        "load": {"positions_per_s": round(positions_per_s, 1), "requests_per_s": round(requests_per_s, 1)},
        "kinesis": {
            "mode": settings["stream_mode"],
            "shards": shards,
            "positions_per_record": round(per_record, 1),
            "records_per_s": round(records_per_s, 1),
            "bytes_per_s": round(bytes_per_s),
            "cost_provisioned": round(kinesis_provisioned, 2),
            "cost_on_demand": round(kinesis_on_demand, 2),
        },
        "ingest": {
            "task_cpu": task_cpu,
            "task_memory": memory_for(task_cpu),
            "capacity_requests_per_s_per_task": round(capacity_rps),
            "steady_tasks": steady_tasks,
            "min_tasks": min_tasks,
            "max_tasks": max_tasks,
            "requests_per_target_per_minute": requests_per_target_per_minute,
        },
        "compactor": {
            "task_cpu": compactor_cpu,
            "task_memory": compactor_memory,
            "positions_per_hour": round(positions_per_hour),
            "run_seconds_per_hour": round(compactor_seconds),
            "runs_of_4m_positions_per_hour": max(1, math.ceil(positions_per_hour / 4_000_000)),
        },
        "lake": {"parquet_gb_per_month": round(lake_gb_per_month, 1)},
        "position_store": {
            "node_type": store_node[0],
            "replicas": settings["store_replicas"],
            "memory_needed_gib": round(store_memory_gib, 2),
            "live_feed_gbit_s": round(store_gbit_s, 4),
        },
        "monthly_cost_usd": costs,
        "monthly_total_usd": round(sum(costs.values()), 2),
    }


def text(result: dict) -> str:
    i, k, g, c = result["input"], result["kinesis"], result["ingest"], result["compactor"]
    lines = [
        f"{i['couriers']:,} couriers, a fix every {i['interval_s']:g} s, {i['positions_per_request']:g} per request ({i['env']} settings)",
        f"  load            {result['load']['positions_per_s']:,} positions/s, {result['load']['requests_per_s']:,} requests/s",
        f"  kinesis         {k['mode']}, {k['shards']} shard(s) if provisioned; {k['positions_per_record']:,} positions/record, "
        f"{k['records_per_s']:,} records/s, {k['bytes_per_s']/1e6:.2f} MB/s",
        f"  ingest-api      {g['task_cpu']} CPU / {g['task_memory']} MiB tasks ({g['capacity_requests_per_s_per_task']:,} requests/s each at 100 %), "
        f"{g['steady_tasks']} at 50 %, min {g['min_tasks']} max {g['max_tasks']}, requests_per_target {g['requests_per_target_per_minute']:,}/min",
        f"  compactor       {c['task_cpu']} CPU / {c['task_memory']} MiB, {c['positions_per_hour']:,} positions/hour in "
        f"{c['runs_of_4m_positions_per_hour']} bounded run(s), ~{c['run_seconds_per_hour']} s of task time per hour",
        f"  lake            {result['lake']['parquet_gb_per_month']:,} GB of Parquet per month",
        f"  position store  {result['position_store']['node_type']} + {result['position_store']['replicas']} replica(s), "
        f"{result['position_store']['memory_needed_gib']} GiB needed, live feed {result['position_store']['live_feed_gbit_s']} Gbit/s",
        "  monthly cost (USD, list prices eu-west-1):",
    ]
    for name, cost in result["monthly_cost_usd"].items():
        lines.append(f"    {name:<22} {cost:>10,.0f}")
    lines.append(f"    {'total':<22} {result['monthly_total_usd']:>10,.0f}")
    return "\n".join(lines)


def markdown(fleets: list[int], interval_s: float, positions_per_request: float) -> str:
    results = [model(n, interval_s, positions_per_request, "prod") for n in fleets]
    header = "| | " + " | ".join(f"{r['input']['couriers']:,} couriers" for r in results) + " |"
    rows = [header, "|---|" + "---:|" * len(results)]

    def row(label: str, values: list[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(values) + " |")

    row("positions/s (requests/s)", [f"{r['load']['positions_per_s']:,.0f} ({r['load']['requests_per_s']:,.0f})" for r in results])
    row("Kinesis shards (provisioned)", [str(r["kinesis"]["shards"]) for r in results])
    row("positions per record", [f"{r['kinesis']['positions_per_record']:,.0f}" for r in results])
    row("ingest tasks (1 vCPU): steady / min / max", [f"{r['ingest']['steady_tasks']} / {r['ingest']['min_tasks']} / {r['ingest']['max_tasks']}" for r in results])
    row("requests_per_target (per minute)", [f"{r['ingest']['requests_per_target_per_minute']:,}" for r in results])
    row("compactor task", [f"{r['compactor']['task_cpu'] // 1024} vCPU / {r['compactor']['task_memory'] // 1024} GB, {r['compactor']['run_seconds_per_hour']} s/h" for r in results])
    row("position store node", [r["position_store"]["node_type"] + f" + {r['position_store']['replicas']}" for r in results])
    row("Parquet per month", [f"{r['lake']['parquet_gb_per_month']:,} GB" for r in results])
    for name in results[0]["monthly_cost_usd"]:
        row(f"{name} $/month", [f"{r['monthly_cost_usd'][name]:,.0f}" for r in results])
    row("**total $/month**", [f"**{r['monthly_total_usd']:,.0f}**" for r in results])
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couriers", type=int)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two fixes of a courier")
    parser.add_argument("--positions-per-request", type=float, default=1.0)
    parser.add_argument("--env", choices=sorted(ENV_SETTINGS), help="prod settings by default; alone: the fleet the environment is sized for")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--markdown", type=int, nargs="+", metavar="COURIERS", help="a markdown table for these fleet sizes (prod settings)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown, args.interval, args.positions_per_request))
        return 0
    if args.couriers is None:
        if args.env is None:
            parser.error("--couriers (or --env, or --markdown) is required")
        couriers, interval, per_request = DESIGN[args.env]
    else:
        couriers, interval, per_request = args.couriers, args.interval, args.positions_per_request
    try:
        result = model(couriers, interval, per_request, args.env or "prod")
    except ValueError as e:
        parser.error(str(e))
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
