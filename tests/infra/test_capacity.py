"""Tests of scripts/capacity.py, the capacity and cost model, and of what
must follow from it: the environments' tfvars and the table in docs/deploy.md.

Run by scripts/check-terraform.sh (pytest in .tools/hcl2-venv, which also
has python-hcl2 for the tfvars).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "capacity.py"

_spec = importlib.util.spec_from_file_location("capacity", SCRIPT)
capacity = importlib.util.module_from_spec(_spec)
sys.modules["capacity"] = capacity
_spec.loader.exec_module(capacity)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def tfvars(env: str) -> dict:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 lives in .tools/hcl2-venv (scripts/check-terraform.sh)")
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)
    return hcl2.loads((ROOT / "terraform" / "envs" / env / "terraform.tfvars").read_text(), serialization_options=options)


# --- the model reproduces what was measured ----------------------------------


def test_ingest_cpu_fit_reproduces_both_measured_runs():
    # docs/performance.md, lean generator, 2 cores: 26,775 single-position
    # requests/s and 702,455 positions/s in batches of 100.
    assert 2 / capacity.cpu_seconds_per_request(1) == pytest.approx(26_775)
    assert 100 * 2 / capacity.cpu_seconds_per_request(100) == pytest.approx(702_455)


def test_positions_per_record_match_the_measured_kinesis_run_within_10_percent():
    # docs/performance.md, BENCH_KINESIS=1 against moto_server: one ingest-api
    # process, its default 4 shards, 2,684 positions/s in records of 8.3
    # positions at a p50 request latency of 23 ms. A request waits for the
    # write in flight, then for its own: the round trip is about half of it.
    per_record, records_per_s, _ = capacity.stream_load(2_684, tasks=1, shards=4, round_trip_s=0.023 / 2)
    assert per_record == pytest.approx(8.3, rel=0.10)
    assert records_per_s == pytest.approx(2_684 / 8.3, rel=0.10)


def test_records_grow_with_the_load_and_stay_within_their_bounds():
    # Group commit: below one position per round trip every position is its
    # own record; above it, records hold a round trip's worth, at most
    # RECORD_MAX_POSITIONS.
    assert capacity.stream_load(10, tasks=1, shards=4)[0] == 1.0
    low, _, _ = capacity.stream_load(4_000, tasks=2, shards=1)
    high, _, _ = capacity.stream_load(40_000, tasks=2, shards=1)
    assert high == pytest.approx(10 * low)
    assert capacity.stream_load(1e9, tasks=1, shards=1)[0] == capacity.RECORD_MAX_POSITIONS


# --- sizing rules ----------------------------------------------------------------


def test_shards_cover_twice_the_write_rate_and_one_shard_fewer_would_not():
    result = capacity.model(200_000, 5, 1, "prod")
    k = result["kinesis"]
    need = 2 * max(k["bytes_per_s"] / 1_000_000, k["records_per_s"] / 1000)
    assert k["shards"] == math.ceil(need) == 3
    assert result["load"]["positions_per_s"] == 40_000


def test_ingest_tasks_run_at_half_their_measured_capacity():
    result = capacity.model(200_000, 5, 1, "prod")["ingest"]
    per_task = 1 / capacity.cpu_seconds_per_request(1)  # 1 vCPU
    assert result["steady_tasks"] == math.ceil(40_000 / (per_task * 0.5)) == 6
    assert result["max_tasks"] == 12
    assert result["requests_per_target_per_minute"] == int(per_task * 0.5 * 60)


def test_batching_positions_needs_fewer_tasks_and_costs_less():
    single = capacity.model(200_000, 5, 1, "prod")
    batched = capacity.model(200_000, 5, 6, "prod")
    assert batched["ingest"]["steady_tasks"] < single["ingest"]["steady_tasks"]
    assert batched["monthly_total_usd"] < single["monthly_total_usd"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_more_couriers_never_need_less(env):
    previous = None
    for couriers in (100, 1_000, 10_000, 50_000, 200_000, 1_000_000):
        r = capacity.model(couriers, 5, 1, env)
        key = (r["kinesis"]["shards"], r["ingest"]["steady_tasks"], r["compactor"]["task_cpu"], r["monthly_total_usd"])
        if previous is not None:
            assert all(a >= b for a, b in zip(key, previous)), (couriers, key, previous)
        previous = key


def test_dev_redshift_cost_is_8_rpu_for_5_minutes_an_hour():
    cost = capacity.model(1_000, 5, 1, "dev")["monthly_cost_usd"]["redshift_serverless"]
    assert cost == pytest.approx(8 * 0.375 * 5 / 60 * 730, abs=0.01)  # ~$182.50


# --- the command ------------------------------------------------------------------


def test_cli_prints_json_with_every_aws_piece():
    result = run_cli("--couriers", "20000", "--interval", "5", "--positions-per-request", "1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["monthly_cost_usd"]) == {
        "kinesis", "ecs_fargate_ingest", "ecs_fargate_compactor", "alb", "waf", "nat_gateways",
        "interface_endpoints", "redshift_serverless", "mwaa", "elasticache", "s3_kms_cloudwatch",
    }
    assert data["monthly_total_usd"] == pytest.approx(sum(data["monthly_cost_usd"].values()), abs=0.05)


def test_cli_refuses_nonsense():
    assert run_cli("--couriers", "0").returncode == 2
    assert run_cli().returncode == 2


# --- what follows from the model --------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_tfvars_follow_from_the_model(env):
    model = json.loads(run_cli("--env", env, "--json").stdout)
    tf = tfvars(env)
    ingest, compactor, kinesis = model["ingest"], model["compactor"], model["kinesis"]
    expected = {
        "stream_mode": kinesis["mode"],
        "ingest_cpu": ingest["task_cpu"],
        "ingest_memory": ingest["task_memory"],
        "ingest_min_capacity": ingest["min_tasks"],
        "ingest_desired_count": ingest["min_tasks"],
        "ingest_max_capacity": ingest["max_tasks"],
        "ingest_requests_per_target": ingest["requests_per_target_per_minute"],
        "compactor_cpu": compactor["task_cpu"],
        "compactor_memory": compactor["task_memory"],
        "position_store_node_type": model["position_store"]["node_type"],
        "position_store_replicas": model["position_store"]["replicas"],
    }
    if kinesis["mode"] == "PROVISIONED":
        expected["stream_shard_count"] = kinesis["shards"]
    actual = {k: tf.get(k) for k in expected}
    assert actual == expected


def test_position_store_node_holds_every_courier_twice_over_and_one_smaller_would_not():
    result = capacity.model(200_000, 5, 1, "prod")
    store = result["position_store"]
    nodes = capacity.STORE_NODES["m7g"]
    names = [n[0] for n in nodes]
    i = names.index(store["node_type"])
    assert nodes[i][1] >= store["memory_needed_gib"] >= 2 * 200_000 * capacity.STORE_BYTES_PER_COURIER / 2**30
    if i > 0:
        smaller = nodes[i - 1]
        assert smaller[1] < store["memory_needed_gib"] or smaller[2] < 2 * store["live_feed_gbit_s"]
    assert store["replicas"] == 1
    dev = capacity.model(1_000, 5, 1, "dev")["position_store"]
    assert (dev["node_type"], dev["replicas"]) == ("cache.t4g.micro", 0)


def test_deploy_guide_shows_the_model_for_1000_20000_and_200000_couriers():
    table = run_cli("--markdown", "1000", "20000", "200000").stdout.strip()
    assert table.count("\n") > 10
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert table in deploy, "docs/deploy.md must hold the output of: scripts/capacity.py --markdown 1000 20000 200000"
