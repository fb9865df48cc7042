#!/usr/bin/env python3
"""Apply the Terraform modules for real against moto_server, run the services
on what apply created, destroy it, and check that nothing is left.

Run by tests/infra/moto_apply/run.sh (which points Terraform at the machine's
provider mirror) with the Python of .tools/test-venv (moto_server, boto3).

1. Start moto_server on a free loopback port (this test's own).
2. `terraform apply` tests/infra/moto_apply (network, stream, lake, registry,
   ingest, compactor, monitoring; see main.tf for what is left out and why)
   with its state and Terraform data in a temporary directory.
3. Read back from the AWS APIs what the load balancer does (idle timeout,
   listener rules, health check) and the two ECS task definitions.
4. Put an API key into the secret apply created (the operator's step), then
   start target/debug/ingest-api with exactly the task definition's
   environment and secrets, as ECS would (GetSecretValue on valueFrom). Only
   what cannot hold on this machine is replaced, and printed: the listen
   address (a free loopback port instead of 0.0.0.0:8080), and the AWS
   endpoint and static credentials instead of the task role.
5. POST positions over HTTP (202 = durable in the Kinesis stream apply
   created), stop the service with SIGTERM.
6. Run target/debug/compactor `run` (the image's CMD) with the compactor task
   definition's environment; its report must count every position, and the
   Delta log in the lake bucket must add files holding exactly that many
   rows. The report line must carry the top-level fields the lake-freshness
   metric filter matches, and no JSON log line may.
7. `terraform destroy`, then the state is empty and the APIs list nothing
   of ours (KMS keys only scheduled for deletion, as on AWS).

Exit status 0 when every check passed; any failure raises.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[3]
COMPOSITION = ROOT / "tests" / "infra" / "moto_apply"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MOTO_SERVER = Path(os.environ.get("MOTO_SERVER", ROOT / ".tools" / "test-venv" / "bin" / "moto_server"))
REGION = "eu-west-1"
NAME = "courier-moto"
POSITIONS_PER_BATCH = 100
BATCHES = 5
SINGLES = 20

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[moto-apply {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float, interval: float = 0.1):
    """Polls check() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported below if it never succeeds
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error!r})")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Moto:
    def __init__(self, workdir: Path) -> None:
        if not MOTO_SERVER.exists():
            raise AssertionError(f"moto_server not found at {MOTO_SERVER}: run `make tools`")
        for _ in range(5):
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            self.log = open(workdir / "moto.log", "wb")
            self.process = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            )
            try:
                wait_until("moto_server", self._up, timeout=30)
                return
            except AssertionError:
                self.stop()  # the port was taken in between: try another
        raise AssertionError("moto_server did not start")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("moto_server exited")
        return http("GET", f"{self.endpoint}/moto-api/")[0] == 200

    def client(self, service: str):
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id="test", aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 2}),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Terraform:
    def __init__(self, workdir: Path, endpoint: str, cert: Path, key: Path) -> None:
        self.workdir = workdir
        self.state = workdir / "terraform.tfstate"
        self.env = dict(os.environ)
        self.env.update({
            "TF_DATA_DIR": str(workdir / "tf-data"),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_VAR_endpoint": endpoint,
            "TF_VAR_certificate_pem": cert.read_text(),
            "TF_VAR_certificate_private_key_pem": key.read_text(),
        })
        if "TF_CLI_CONFIG_FILE" not in self.env or not Path(self.env["TF_CLI_CONFIG_FILE"]).is_file():
            raise AssertionError("TF_CLI_CONFIG_FILE must name the provider-mirror CLI config (run run.sh)")

    def run(self, *args: str, timeout: float = 60) -> str:
        """Runs terraform; output goes to a log in the work directory, shown on failure."""
        command = ["terraform", f"-chdir={COMPOSITION}", *args]
        log_path = self.workdir / f"terraform-{args[0]}.log"
        with open(log_path, "w") as out:
            try:
                result = subprocess.run(command, env=self.env, text=True, stdout=subprocess.PIPE, stderr=out, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                out.write(e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))
                failure = f"terraform {args[0]} did not finish within {timeout} s"
            else:
                out.write(result.stdout)
                if result.returncode == 0:
                    return result.stdout
                failure = f"terraform {args[0]} failed with exit code {result.returncode}"
        tail = log_path.read_text().splitlines()[-60:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise AssertionError(failure)

    def init(self) -> None:
        self.run("init", "-backend=false", "-lockfile=readonly", "-no-color")

    def apply(self) -> None:
        self.run("apply", "-auto-approve", "-no-color", "-parallelism=30", f"-state={self.state}", timeout=300)

    def destroy(self) -> None:
        # No refresh: the state was just written by apply and read back by the checks.
        self.run("destroy", "-auto-approve", "-no-color", "-refresh=false", "-parallelism=30", f"-state={self.state}", timeout=300)

    def outputs(self) -> dict:
        raw = json.loads(self.run("output", "-json", f"-state={self.state}"))
        return {k: v["value"] for k, v in raw.items()}

    def resources(self) -> list[str]:
        if not self.state.exists():
            return []
        return [line for line in self.run("state", "list", f"-state={self.state}").splitlines() if line]


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=ingest.moto.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def task_container(ecs, task_definition_arn: str, name: str) -> dict:
    definition = ecs.describe_task_definition(taskDefinition=task_definition_arn)["taskDefinition"]
    containers = {c["name"]: c for c in definition["containerDefinitions"]}
    assert name in containers, f"{task_definition_arn} has no container {name!r}: {sorted(containers)}"
    return containers[name]


def ecs_environment(container: dict, secretsmanager) -> dict[str, str]:
    """The container's environment as ECS builds it: plain values, then secrets."""
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    for secret in container.get("secrets", []):
        env[secret["name"]] = secretsmanager.get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
    return env


def check_settings_known(binary: str, subcommand: str, prefix: str, task_env: dict[str, str]) -> None:
    """clap ignores unknown environment variables: a misspelt setting in a task
    definition would be silently dropped. Every <prefix>* variable must be one
    the binary documents as `[env: NAME=]`."""
    help_text = subprocess.run([str(TARGET / binary), subcommand, "--help"], capture_output=True, text=True, check=True).stdout
    known = set(re.findall(r"\[env: (\w+)[=\]]", help_text))
    unknown = sorted(k for k in task_env if k.startswith(prefix) and k not in known)
    assert unknown == [], f"the {binary} task definition sets variables {binary} {subcommand} does not know: {unknown}"


def local_process_env(task_env: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """A clean environment: the task's, plus what this machine needs (printed)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(task_env)
    for key, value in overrides.items():
        shown = value if "SECRET" not in key else "***"
        if key in task_env and task_env[key] != value:
            log(f"  override {key}={shown} (task definition: {task_env[key]})")
        elif key not in task_env:
            log(f"  add      {key}={shown}")
    env.update(overrides)
    return env


def check_load_balancer(moto: Moto, outputs: dict, ingest_env: dict[str, str]) -> None:
    elbv2 = moto.client("elbv2")
    alb_arn = outputs["alb_arn"]
    attributes = {a["Key"]: a["Value"] for a in elbv2.describe_load_balancer_attributes(LoadBalancerArn=alb_arn)["Attributes"]}
    idle = int(attributes["idle_timeout.timeout_seconds"])
    keep_alive = int(ingest_env["INGEST_KEEP_ALIVE_SECS"])
    assert idle == 60, f"ALB idle timeout {idle}"
    assert keep_alive > idle, f"INGEST_KEEP_ALIVE_SECS {keep_alive} must exceed the ALB idle timeout {idle}"

    listeners = elbv2.describe_listeners(LoadBalancerArn=alb_arn)["Listeners"]
    https = next(l for l in listeners if l["Port"] == 443)
    default = https["DefaultActions"][0]
    assert default["Type"] == "fixed-response" and default["FixedResponseConfig"]["StatusCode"] == "404", default
    forwarded = sorted(
        value
        for rule in elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
        if not rule["IsDefault"]
        for condition in rule["Conditions"]
        if condition["Field"] == "path-pattern"
        for value in condition.get("PathPatternConfig", {}).get("Values", condition.get("Values", []))
        if rule["Actions"][0]["Type"] == "forward"
    )
    assert forwarded == ["/assets/*", "/map", "/track", "/v1/*"], f"paths forwarded to the service: {forwarded}"

    groups = elbv2.describe_target_groups(LoadBalancerArn=alb_arn)["TargetGroups"]
    assert [g["HealthCheckPath"] for g in groups] == ["/healthz"], groups
    log(f"load balancer: idle timeout {idle} s < keep-alive {keep_alive} s, only {forwarded} forwarded, health check /healthz")


def check_alarms(moto: Moto) -> None:
    alarms = {a["AlarmName"]: a for a in moto.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    freshness = alarms[f"{NAME}-lake-freshness"]
    assert freshness["TreatMissingData"] == "breaching", freshness
    heartbeat = alarms[f"{NAME}-mwaa-scheduler-heartbeat"]
    assert heartbeat["TreatMissingData"] == "breaching", heartbeat
    filters = moto.client("logs").describe_metric_filters(logGroupName=f"/ecs/{NAME}/compactor")["metricFilters"]
    names = {f["metricTransformations"][0]["metricName"] for f in filters}
    assert {"CompactorSuccessfulRuns", "CompactorRowsWritten"} <= names, names
    log(f"alarms: {len(alarms)}, lake freshness and scheduler heartbeat breach on missing data")


def positions_payloads() -> list[bytes]:
    now = datetime.now(timezone.utc)
    bodies = []
    n = 0
    for b in range(BATCHES):
        batch = []
        for i in range(POSITIONS_PER_BATCH):
            batch.append({
                "courier_id": f"courier-{i % 37}",
                "lat": 48.85 + i / 10_000,
                "lon": 2.35 + b / 10_000,
                "recorded_at": (now - timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            })
            n += 1
        bodies.append(json.dumps({"positions": batch}).encode())
    for i in range(SINGLES):
        bodies.append(json.dumps({
            "courier_id": f"courier-single-{i}",
            "lat": -23.56,
            "lon": -46.65,
            "recorded_at": (now - timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }).encode())
        n += 1
    return bodies


def run_ingest(moto: Moto, outputs: dict, workdir: Path) -> int:
    ecs, secretsmanager = moto.client("ecs"), moto.client("secretsmanager")

    # The operator's step after the first apply: put the API keys into the secret.
    token = "cpk_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    secretsmanager.put_secret_value(SecretId=outputs["api_keys_secret_arn"], SecretString=f"moto-test:{digest}")
    # Likewise the dispatch keys (tracking links, the erasure DAG's live-store tier).
    dispatch_token = "cpk_" + secrets.token_urlsafe(32)
    dispatch_digest = hashlib.sha256(dispatch_token.encode()).hexdigest()
    secretsmanager.put_secret_value(SecretId=outputs["dispatch_api_keys_secret_arn"],
                                    SecretString=f"moto-dispatch:{dispatch_digest}")

    container = task_container(ecs, outputs["ingest_task_definition_arn"], "ingest-api")
    task_env = ecs_environment(container, secretsmanager)
    check_load_balancer(moto, outputs, task_env)
    check_settings_known("ingest-api", "serve", "INGEST_", task_env)
    assert task_env["INGEST_STREAM_NAME"] == outputs["stream_name"], task_env

    port = free_port()
    log("ingest-api with the task definition's environment:")
    env = local_process_env(task_env, {
        "INGEST_LISTEN": f"127.0.0.1:{port}",
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    base = f"http://127.0.0.1:{port}"
    with open(workdir / "ingest-api.log", "wb") as out:
        process = subprocess.Popen([str(TARGET / "ingest-api"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"ingest-api exited with {process.returncode}")
                return http("GET", f"{base}/readyz")[0] == 200
            wait_until("ingest-api /readyz", ready, timeout=30)

            sent = 0
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for body in positions_payloads():
                status, answer = http("POST", f"{base}/v1/positions", body, headers)
                assert status == 202, f"POST /v1/positions: {status} {answer[:500]!r}"
                sent += json.loads(answer).get("accepted", 0)
            expected = BATCHES * POSITIONS_PER_BATCH + SINGLES
            assert sent == expected, f"accepted {sent} of {expected}"
            status, _ = http("POST", f"{base}/v1/positions", b"[]", {"Authorization": "Bearer cpk_wrong"})
            assert status == 401, f"a wrong key must get 401, got {status}"
            # The dispatch key from its own secret works, and only for dispatch routes.
            dispatch = {"Authorization": f"Bearer {dispatch_token}"}
            status, answer = http("DELETE", f"{base}/v1/couriers/moto-courier-0/position", None, dispatch)
            assert status == 204, f"DELETE /v1/couriers/.../position with the dispatch key: {status} {answer[:300]!r}"
            status, _ = http("DELETE", f"{base}/v1/couriers/moto-courier-0/position", None, {"Authorization": f"Bearer {token}"})
            assert status == 401, f"a courier-app key must not erase a live position, got {status}"
            log(f"ingest-api: {sent} positions accepted (202, durable in {outputs['stream_name']})")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("ingest-api did not stop within 40 s of SIGTERM")
    assert code == 0, f"ingest-api exited with {code} after SIGTERM (log: {workdir / 'ingest-api.log'})"
    return sent


def run_compactor(moto: Moto, outputs: dict, workdir: Path, expected_rows: int) -> None:
    ecs = moto.client("ecs")
    container = task_container(ecs, outputs["compactor_task_definition_arn"], outputs["compactor_container_name"])
    task_env = ecs_environment(container, moto.client("secretsmanager"))
    assert task_env["COMPACTOR_TABLE_URI"] == outputs["table_uri"], task_env
    check_settings_known("compactor", "run", "COMPACTOR_", task_env)
    log("compactor with the task definition's environment:")
    env = local_process_env(task_env, {
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    result = subprocess.run([str(TARGET / "compactor"), "run"], env=env, capture_output=True, text=True, timeout=120)
    (workdir / "compactor.stderr").write_text(result.stderr)
    assert result.returncode == 0, f"compactor run exited with {result.returncode}:\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["committed"] is True and report["rows_written"] == expected_rows, report
    log(f"compactor: run {report['run']} committed {report['rows_written']} rows, table version {report['table_version']}")

    # The lake-freshness metric filter, as applied: every run report must
    # match it, no JSON log line may (else run starts would count as runs).
    filters = moto.client("logs").describe_metric_filters(logGroupName=f"/ecs/{NAME}/compactor")["metricFilters"]
    runs_filter = next(f for f in filters if f["metricTransformations"][0]["metricName"] == "CompactorSuccessfulRuns")
    fields = re.findall(r"\$\.(\w+) >= 0", runs_filter["filterPattern"])
    assert fields and "(" in runs_filter["filterPattern"], runs_filter["filterPattern"]

    def matches(line: dict) -> bool:
        return all(isinstance(line.get(f), int) and not isinstance(line.get(f), bool) and line[f] >= 0 for f in fields)

    assert matches(report), f"the run report does not match {runs_filter['filterPattern']}: {report}"
    log_lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert log_lines, "the compactor logs JSON on stderr (COMPACTOR_LOG_FORMAT=json in the task definition)"
    counted = [line for line in log_lines if matches(line)]
    assert counted == [], f"JSON log lines that {runs_filter['filterPattern']} would count as runs: {counted}"
    log(f"metric filter {runs_filter['filterPattern']}: matches the report, none of {len(log_lines)} log lines")

    # The table, read from the bucket: files added by the Delta log hold every row.
    s3 = moto.client("s3")
    bucket = outputs["lake_bucket_name"]
    prefix = outputs["table_uri"].removeprefix(f"s3://{bucket}/").rstrip("/") + "/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "_delta_log/")
            for o in page.get("Contents", [])]
    commits = sorted(k for k in keys if k.endswith(".json"))
    assert commits, f"no Delta commits under s3://{bucket}/{prefix}_delta_log/"
    rows, files = 0, 0
    for key in commits:
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                s3.head_object(Bucket=bucket, Key=prefix + urllib.request.unquote(add["path"]))
                rows += json.loads(add["stats"])["numRecords"]
                files += 1
            assert "remove" not in action, action
    assert rows == expected_rows, f"the Delta log adds {rows} rows in {files} files, expected {expected_rows}"
    log(f"lake: s3://{bucket}/{prefix} has {len(commits)} commits adding {files} Parquet files with {rows} rows")


def check_nothing_left(moto: Moto, terraform: Terraform) -> None:
    left = terraform.resources()
    assert left == [], f"state still holds {left}"
    problems = []
    checks = {
        "s3 buckets": [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]],
        "kinesis streams": moto.client("kinesis").list_streams()["StreamNames"],
        "load balancers": [l["LoadBalancerName"] for l in moto.client("elbv2").describe_load_balancers()["LoadBalancers"]],
        "target groups": [g["TargetGroupName"] for g in moto.client("elbv2").describe_target_groups()["TargetGroups"]],
        "ecr repositories": [r["repositoryName"] for r in moto.client("ecr").describe_repositories()["repositories"]],
        "iam roles": [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(NAME)],
        "log groups": [g["logGroupName"] for g in moto.client("logs").describe_log_groups()["logGroups"]],
        "metric filters": [f["filterName"] for f in moto.client("logs").describe_metric_filters()["metricFilters"]],
        "alarms": [a["AlarmName"] for a in moto.client("cloudwatch").describe_alarms()["MetricAlarms"]],
        "sns topics": [t["TopicArn"] for t in moto.client("sns").list_topics()["Topics"]],
        "event rules": [r["Name"] for r in moto.client("events").list_rules()["Rules"]],
        "secrets": [s["Name"] for s in moto.client("secretsmanager").list_secrets()["SecretList"]],
        "web acls": [a["Name"] for a in moto.client("wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"]],
        "scalable targets": [t["ResourceId"] for t in moto.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]],
        "task definitions": moto.client("ecs").list_task_definitions(status="ACTIVE")["taskDefinitionArns"],
        "active ecs clusters": [c["clusterName"] for c in moto.client("ecs").describe_clusters(clusters=moto.client("ecs").list_clusters()["clusterArns"])["clusters"] if c["status"] == "ACTIVE"] if moto.client("ecs").list_clusters()["clusterArns"] else [],
        "vpcs": [v["VpcId"] for v in moto.client("ec2").describe_vpcs()["Vpcs"] if not v["IsDefault"]],
        "elastic ips": [a["AllocationId"] for a in moto.client("ec2").describe_addresses()["Addresses"]],
        "vpc endpoints": [e["VpcEndpointId"] for e in moto.client("ec2").describe_vpc_endpoints()["VpcEndpoints"] if e["State"] != "deleted"],
        "acm certificates": [c["CertificateArn"] for c in moto.client("acm").list_certificates()["CertificateSummaryList"]],
    }
    kms = moto.client("kms")
    checks["kms keys not scheduled for deletion"] = [
        k["KeyId"] for k in kms.list_keys()["Keys"]
        if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] != "PendingDeletion"
    ]
    checks["kms aliases"] = [a["AliasName"] for a in kms.list_aliases()["Aliases"] if not a["AliasName"].startswith("alias/aws/")]
    for what, found in checks.items():
        if found:
            problems.append(f"{what}: {found}")
    assert problems == [], "left behind after terraform destroy:\n  " + "\n  ".join(problems)
    log(f"destroy left nothing behind ({len(checks)} kinds of resource checked; KMS keys scheduled for deletion)")


def main() -> int:
    for binary in ("ingest-api", "compactor"):
        if not (TARGET / binary).is_file():
            raise AssertionError(f"{TARGET / binary} is missing: cargo build --locked -p ingest-api -p compactor --bins")
    workdir = Path(tempfile.mkdtemp(prefix="moto-apply-"))
    moto = None
    try:
        moto = Moto(workdir)
        log(f"moto_server on {moto.endpoint}, work directory {workdir}")
        log("applied for real: network, stream, lake, registry, ingest, compactor, monitoring; "
            "not applied (no moto support, covered by the mocked plan and apply of terraform/tests): "
            "warehouse (Redshift Serverless), orchestration (MWAA)")
        cert, key = self_signed_certificate(workdir)
        terraform = Terraform(workdir, moto.endpoint, cert, key)
        terraform.init()
        terraform.apply()
        applied = terraform.resources()
        log(f"terraform apply: {len(applied)} resources in the state")
        try:
            outputs = terraform.outputs()
            check_alarms(moto)
            sent = run_ingest(moto, outputs, workdir)
            run_compactor(moto, outputs, workdir, sent)
        finally:
            terraform.destroy()
        log("terraform destroy done")
        check_nothing_left(moto, terraform)
        log("PASSED")
        return 0
    finally:
        if moto is not None:
            moto.stop()
        if os.environ.get("KEEP_MOTO_APPLY_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")


if __name__ == "__main__":
    sys.exit(main())
