"""Structural tests of docker-compose.yml and what it mounts and builds.

Our CI machines have no Docker engine, so the stack is never started there.
`make test` validates the file against the Compose specification
(check-jsonschema --builtin-schema vendor.compose-spec); these tests check
what a schema cannot: healthchecks or one-shot jobs, depends_on conditions,
${VAR:-default} everywhere, the compactor's environment equal to the ECS task
definition's, LocalStack init scripts that create the stream and bucket the
services point at, the lake prefixes of the Terraform lake module, the
Airflow connections the DAGs use, and no secret but the documented demo key.

Every checker is a pure function returning a list of problems; the tests at
the bottom feed some of them a small bad snippet to prove that they can fail.
Run by scripts/check-terraform.sh (the hcl2 venv, which has PyYAML).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

try:
    import yaml
except ImportError:  # pragma: no cover - only outside scripts/check-terraform.sh
    if os.environ.get("TERRAFORM_CHECKS_STRICT") == "1":
        raise
    pytest.skip("PyYAML not installed: run scripts/check-terraform.sh", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_DIR = ROOT / "docker" / "localstack" / "init" / "ready.d"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# The documented local demo key (docs/deploy.md): never valid in AWS.
DEMO_TOKEN = "cpk_local-demo-key-do-not-use-in-aws"
DEMO_HASH = hashlib.sha256(DEMO_TOKEN.encode()).hexdigest()
# The local dispatch key (tracking links; the erasure DAG's live-store tier), also public.
DISPATCH_TOKEN = "cpk_local-dispatch-key-do-not-use-in-aws"
DISPATCH_HASH = hashlib.sha256(DISPATCH_TOKEN.encode()).hexdigest()
# LocalStack accepts any credentials; "test" is its documented dummy.
LOCALSTACK_DUMMY_CREDENTIAL = "test"

# The compactor's environment in compose: the ECS task definition's COMPACTOR_*
# names plus what the AWS SDK and delta-rs need to reach LocalStack.
COMPACTOR_ENV = {
    "COMPACTOR_SOURCE",
    "COMPACTOR_STREAM_NAME",
    "COMPACTOR_TABLE_URI",
    "COMPACTOR_DEAD_LETTER_URI",
    "COMPACTOR_MANIFEST_URI",
    "COMPACTOR_LOG_FORMAT",
}
LOCALSTACK_AWS_ENV = {
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}

DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
BARE_VARIABLE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_key|api_keys|private_key|credential)")


def load_compose(text: str | None = None) -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text() if text is None else text)


def resolve(value: Any) -> str:
    """A value as Compose would interpolate it with no variable set."""
    text = str(value)
    text = INTERPOLATION.sub(lambda m: m.group(2) or "", text)
    return text.replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): resolve(v) for k, v in env.items()}


def tf_default(module: str, variable: str) -> str:
    """The string default of a Terraform variable (regex: no hcl2 needed)."""
    text = (ROOT / "terraform" / "modules" / module / "variables.tf").read_text()
    block = re.search(rf'variable "{variable}" \{{(.*?)\n\}}', text, re.S)
    assert block, f"variable {variable} not in terraform/modules/{module}"
    default = re.search(r'^\s*default\s*=\s*"([^"]*)"', block.group(1), re.M)
    assert default, f"variable {variable} of terraform/modules/{module} has no string default"
    return default.group(1)


def tf_compactor_env_names() -> set[str]:
    """The COMPACTOR_* names the compactor module puts in the task definition."""
    text = (ROOT / "terraform" / "modules" / "compactor" / "main.tf").read_text()
    block = re.search(r"environment\s*=\s*merge\(var\.extra_environment,\s*\{(.*?)\}\)", text, re.S)
    assert block, "environment = merge(var.extra_environment, {...}) not found in the compactor module"
    return set(re.findall(r"^\s*(COMPACTOR_[A-Z_]+)\s*=", block.group(1), re.M))


# --------------------------------------------------------------------------
# Checkers: pure functions over the parsed compose file
# --------------------------------------------------------------------------


def check_healthchecks(compose: dict[str, Any]) -> list[str]:
    """Long-running services have a healthcheck; the rest are one-shot jobs
    under a profile that never restart."""
    problems = []
    for name, svc in compose["services"].items():
        if "healthcheck" in svc:
            hc = svc["healthcheck"]
            if hc.get("disable") or not hc.get("test"):
                problems.append(f"{name}: healthcheck without a test")
            continue
        if not svc.get("profiles") or str(svc.get("restart", "no")) != "no":
            problems.append(f"{name}: no healthcheck, and not a one-shot job (profiles + restart: \"no\")")
    return problems


def check_depends_on(compose: dict[str, Any]) -> list[str]:
    problems = []
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on is a list (no conditions)")
            continue
        for dep, spec in deps.items():
            condition = (spec or {}).get("condition")
            if condition not in DEPENDS_ON_CONDITIONS:
                problems.append(f"{name}: depends_on {dep} has no valid condition ({condition!r})")
            elif condition == "service_healthy" and "healthcheck" not in services.get(dep, {}):
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
    return problems


def check_interpolation(text: str) -> list[str]:
    """Every ${VAR} has a default (${VAR:-default}); no bare $VAR (use $$ for the container's shell)."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(?<!\$)\$\{([^}]*)\}", line):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*:-[^}]*", m.group(1)):
                problems.append(f"line {lineno}: ${{{m.group(1)}}} has no ':-' default")
        for m in BARE_VARIABLE.finditer(line.replace("$$", "")):
            problems.append(f"line {lineno}: bare ${m.group(1)} (write ${{{m.group(1)}:-default}} or $${m.group(1)})")
    return problems


def check_secrets(compose: dict[str, Any], text: str) -> list[str]:
    """No secret but LocalStack's dummy credentials and the demo and dispatch keys."""
    allowed = {LOCALSTACK_DUMMY_CREDENTIAL, DEMO_TOKEN, DEMO_HASH, DISPATCH_TOKEN, DISPATCH_HASH}
    problems = []
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and value:
                parts = {p for line in re.split(r"[,\n]", value) for p in line.split(":") if p}
                if not (parts & allowed):
                    problems.append(f"{name}: {key} holds a literal value that is not the demo key or LocalStack's dummy")
                if key.endswith("API_KEYS"):
                    for line in filter(None, (l.strip() for l in re.split(r"[,\n]", value))):
                        fields = line.split(":")
                        wanted = DISPATCH_HASH if key.endswith("DISPATCH_API_KEYS") else DEMO_HASH
                        if len(fields) < 2 or fields[1] != wanted:
                            problems.append(f"{name}: {key} line {line!r} is not the local demo key of its kind")
            for m in re.finditer(r"://([^/@:\s]+):([^/@\s]+)@", value):
                problems.append(f"{name}: {key} has a password in a URI ({m.group(1)}:***@)")
    for m in re.finditer(r"\b[0-9a-f]{64}\b", text):
        if m.group(0) not in (DEMO_HASH, DISPATCH_HASH):
            problems.append(f"a 64-hex string other than the demo keys' hashes: {m.group(0)[:8]}...")
    if re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text):
        problems.append("an AWS access key id")
    if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        problems.append("a private key")
    return problems


def check_images_pinned(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        if "build" in svc:
            continue
        image = resolve(svc.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"{name}: image {image!r} is not pinned to a tag")
    return problems


def check_named_volumes_and_loopback_ports(compose: dict[str, Any]) -> list[str]:
    problems = []
    declared = set((compose.get("volumes") or {}).keys())
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    problems.append(f"{name}: bind mount source {source} does not exist")
            elif source not in declared:
                problems.append(f"{name}: volume {source} is not a declared named volume")
        for port in svc.get("ports", []):
            if not resolve(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
    return problems


# --------------------------------------------------------------------------
# Tests of the real file
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def test_compose_file_has_the_platform_services_and_no_version_key(compose):
    assert "version" not in compose, "the Compose spec has no version: key"
    assert set(compose["services"]) == {"localstack", "postgres", "ingest-api", "compactor", "airflow", "courier-sim"}


def test_every_long_running_service_has_a_healthcheck_and_the_rest_are_one_shot_jobs(compose):
    assert check_healthchecks(compose) == []
    services = compose["services"]
    assert services["compactor"]["profiles"] == ["jobs"]
    assert services["courier-sim"]["profiles"] == ["sim"]


def test_every_depends_on_names_a_condition(compose):
    assert check_depends_on(compose) == []


def test_every_variable_is_overridable_with_a_default():
    assert check_interpolation(COMPOSE_FILE.read_text()) == []


def test_images_are_pinned_volumes_named_and_ports_on_loopback(compose):
    assert check_images_pinned(compose) == []
    assert check_named_volumes_and_loopback_ports(compose) == []


def test_no_plaintext_secret_but_the_documented_demo_key(compose):
    assert check_secrets(compose, COMPOSE_FILE.read_text()) == []
    doc = DEPLOY_DOC.read_text()
    assert DEMO_TOKEN in doc and DEMO_HASH in doc, "docs/deploy.md documents the demo key (token and hash)"
    assert DISPATCH_TOKEN in doc and DISPATCH_HASH in doc, "docs/deploy.md documents the dispatch key (token and hash)"


def test_built_services_use_their_own_dockerfile_from_the_repository_root(services):
    for name, dockerfile in {
        "ingest-api": "services/ingest-api/Dockerfile",
        "compactor": "services/compactor/Dockerfile",
        "courier-sim": "services/courier-sim/Dockerfile",
    }.items():
        assert services[name]["build"] == {"context": ".", "dockerfile": dockerfile}
        assert (ROOT / dockerfile).is_file()


def test_compactor_environment_is_the_ecs_task_definitions_plus_localstack_access(services):
    env = environment(services["compactor"])
    assert {k for k in env if k.startswith("COMPACTOR_")} == COMPACTOR_ENV == tf_compactor_env_names()
    assert set(env) == COMPACTOR_ENV | LOCALSTACK_AWS_ENV | {"AWS_ALLOW_HTTP"}
    assert env["COMPACTOR_SOURCE"] == "kinesis"
    assert env["COMPACTOR_LOG_FORMAT"] == "json"
    assert env["AWS_ALLOW_HTTP"] == "true"
    assert services["compactor"]["command"] == ["run"]


def test_ingest_api_writes_to_localstack_kinesis_with_the_demo_key(services):
    env = environment(services["ingest-api"])
    assert env["INGEST_SINK"] == "kinesis"
    assert env["INGEST_LISTEN"] == "0.0.0.0:8080"
    assert env["INGEST_LOG_FORMAT"] == "json"
    assert env["INGEST_API_KEYS"].split(":")[1] == DEMO_HASH
    assert LOCALSTACK_AWS_ENV <= set(env) and env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    assert "/readyz" in " ".join(services["ingest-api"]["healthcheck"]["test"])
    sim = environment(services["courier-sim"])
    assert sim["SIM_URL"] == "http://ingest-api:8080" and sim["SIM_TOKEN"] == DEMO_TOKEN


def test_lake_prefixes_are_the_terraform_lake_module_defaults(services):
    env = environment(services["localstack"])
    bucket = env["LAKE_BUCKET"]
    compactor = environment(services["compactor"])
    for variable, uri_key, env_key in (
        ("table_prefix", "COMPACTOR_TABLE_URI", "TABLE_PREFIX"),
        ("dead_letter_prefix", "COMPACTOR_DEAD_LETTER_URI", "DEAD_LETTER_PREFIX"),
        ("manifest_prefix", "COMPACTOR_MANIFEST_URI", "MANIFEST_PREFIX"),
    ):
        prefix = tf_default("lake", variable)
        assert env[env_key] == prefix
        assert compactor[uri_key] == f"s3://{bucket}/{prefix}"


def test_init_scripts_are_executable_and_create_the_stream_and_bucket_the_services_use(services):
    scripts = sorted(INIT_DIR.glob("*.sh"))
    assert scripts, f"no init scripts in {INIT_DIR}"
    mount = f"./{INIT_DIR.relative_to(ROOT)}:/etc/localstack/init/ready.d:ro"
    assert mount in services["localstack"]["volumes"]
    text = ""
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        body = script.read_text()
        assert body.startswith("#!/bin/bash\n") and "set -euo pipefail" in body, script.name
        text += body

    ls_env = environment(services["localstack"])
    assert ls_env["SERVICES"] == "kinesis,s3"
    # The scripts create what the variables name, with the same fallbacks as compose.
    assert re.search(r'stream="\$\{STREAM_NAME:-' + re.escape(ls_env["STREAM_NAME"]) + r'\}"', text)
    assert re.search(r'shards="\$\{STREAM_SHARDS:-' + re.escape(ls_env["STREAM_SHARDS"]) + r'\}"', text)
    assert re.search(r'awslocal kinesis create-stream .*--stream-name "\$stream" --shard-count "\$shards"', text)
    assert re.search(r'bucket="\$\{LAKE_BUCKET:-' + re.escape(ls_env["LAKE_BUCKET"]) + r'\}"', text)
    assert re.search(r'awslocal s3 mb "s3://\$bucket"', text)

    # ... and every service points at that stream and that bucket.
    stream_keys = {
        "ingest-api": "INGEST_STREAM_NAME",
        "compactor": "COMPACTOR_STREAM_NAME",
        "airflow": "AIRFLOW_VAR_COURIER_STREAM_NAME",
    }
    for name, key in stream_keys.items():
        assert environment(services[name])[key] == ls_env["STREAM_NAME"], f"{name}: {key}"
    for name, svc in services.items():
        for key, value in environment(svc).items():
            for bucket in re.findall(r"s3://([^/]+)", value):
                assert bucket == ls_env["LAKE_BUCKET"], f"{name}: {key} points at bucket {bucket}"
            if "localstack" in value and name != "localstack":
                assert "depends_on" in svc and "localstack" in svc["depends_on"], f"{name} uses localstack without depends_on"


def test_airflow_gets_the_dags_and_the_connections_they_use(services):
    airflow = services["airflow"]
    env = environment(airflow)
    assert airflow["command"] == ["standalone"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    dag_files = sorted((ROOT / "airflow-dags").glob("*.py"))
    assert dag_files
    conn_ids = set()
    for dag in dag_files:
        conn_ids |= set(re.findall(r'(?:CONN_ID\s*=\s*|conn_id\s*=\s*)"([a-z_]+)"', dag.read_text()))
        mount = f"./airflow-dags/{dag.name}:/opt/airflow/dags/{dag.name}:ro"
        assert mount in airflow["volumes"], f"{dag.name} is not mounted into /opt/airflow/dags"
    assert "./airflow-dags/sql:/opt/airflow/dags/sql:ro" in airflow["volumes"]
    assert {"courier_warehouse", "aws_default"} <= conn_ids
    for conn_id in conn_ids:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, f"no AIRFLOW_CONN_ for {conn_id}"
    assert env["AIRFLOW_CONN_COURIER_WAREHOUSE"].startswith("postgresql://") and "@postgres:5432/" in env["AIRFLOW_CONN_COURIER_WAREHOUSE"]
    assert "http://localstack:4566" in env["AIRFLOW_CONN_AWS_DEFAULT"]
    assert airflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_init_sql_is_standalone_ddl(services):
    mounts = [v.split(":")[0] for v in services["postgres"]["volumes"] if v.startswith("./")]
    # The warehouse tables come from the DAG's versioned migrations, never
    # from an init script that would bypass schema_migrations.
    assert not [m for m in mounts if "airflow-dags" in m], mounts
    for mount in mounts:
        assert (ROOT / mount).exists(), f"{mount} is mounted but does not exist"
        sql = (ROOT / mount).read_text()
        assert "{{" not in sql and "{%" not in sql, f"{mount} is a template, not standalone SQL"


def _stubbed_benches(dockerfile: Path) -> set[str]:
    return set(re.findall(r'benches/([A-Za-z0-9_]+)\.rs"', dockerfile.read_text()))


def _declared_benches() -> set[str]:
    names = set()
    for manifest in (ROOT / "services").glob("*/Cargo.toml"):
        names |= set(re.findall(r'\[\[bench\]\]\s*\nname\s*=\s*"([^"]+)"', manifest.read_text()))
    return names


# The two older Dockerfiles stub only benches/ingest_load.rs, so Cargo cannot
# parse services/compactor/Cargo.toml ([[bench]] compactor_load) in their
# dependency layer: their `docker build` fails. Strict: fixing them makes this
# XPASS, which fails, so the marker must then be removed.



@pytest.mark.parametrize(
    "service",
    [
        p.parent.name
        for p in sorted((ROOT / "services").glob("*/Dockerfile"))
    ],
)
def test_dockerfile_dependency_layer_stubs_every_declared_bench(service):
    """Cargo parses every workspace member; a [[bench]] without its file fails the build."""
    missing = _declared_benches() - _stubbed_benches(ROOT / "services" / service / "Dockerfile")
    assert not missing, f"services/{service}/Dockerfile stubs no benches/{sorted(missing)}.rs"


# --------------------------------------------------------------------------
# The checkers can fail
# --------------------------------------------------------------------------

BAD = """
services:
  api:
    image: example/api:latest
    environment:
      DB_PASSWORD: hunter2
      DATABASE_URL: postgresql://app:hunter2@db:5432/app
      INGEST_API_KEYS: k:0000000000000000000000000000000000000000000000000000000000000000
    ports: ["8080:8080"]
    volumes: [data:/data]
    depends_on: [db]
  db:
    image: postgres
    restart: always
  job:
    image: example/job:1.0
    profiles: [jobs]
    depends_on:
      api:
        condition: service_healthy
"""


def test_checkers_report_a_bad_compose_file():
    bad = load_compose(BAD)
    assert any("db: no healthcheck" in p for p in check_healthchecks(bad))
    assert any("api: no healthcheck" in p for p in check_healthchecks(bad))
    assert not any(p.startswith("job:") for p in check_healthchecks(bad))
    deps = check_depends_on(bad)
    assert any("api: depends_on is a list" in p for p in deps)
    assert any("job: waits for api to be healthy" in p for p in deps)
    secrets = check_secrets(bad, BAD)
    assert any("DB_PASSWORD" in p for p in secrets)
    assert any("password in a URI" in p for p in secrets)
    assert any("INGEST_API_KEYS line" in p for p in secrets)
    assert any("64-hex" in p for p in secrets)
    pinned = check_images_pinned(bad)
    assert any("api:" in p for p in pinned) and any("db:" in p for p in pinned)
    assert not any(p.startswith("job:") for p in pinned)
    vols = check_named_volumes_and_loopback_ports(bad)
    assert any("volume data" in p for p in vols) and any("not bound to 127.0.0.1" in p for p in vols)


def test_interpolation_checker_reports_missing_defaults_and_bare_variables():
    text = 'a: ${FOO}\nb: $BAR\nc: ${OK:-1}\nd: "$${SHELL_VAR} $$HOME"\n# e: ${COMMENT}\n'
    problems = check_interpolation(text)
    assert len(problems) == 2, problems
    assert "line 1" in problems[0] and "line 2" in problems[1]
