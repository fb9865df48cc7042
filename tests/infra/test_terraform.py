"""Structural tests of the Terraform code under terraform/.

`terraform validate` cannot run on our CI machines (no provider can be
downloaded), so these tests check what it would not check anyway, plus the
house rules: documented and typed variables, module calls that match the
modules' inputs and outputs, tags everywhere, no secrets, no open ingress.

Every checker is a pure function over parsed HCL that returns a list of
problems; the tests at the bottom feed each checker a small bad snippet to
prove that it can fail.

Run with python-hcl2 8.x (kept in its own venv: checkov ships a fork that
installs under the same module name). See scripts/check-terraform.sh.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

try:
    import hcl2

    _HCL2_OK = hasattr(hcl2, "SerializationOptions")
except ImportError:
    _HCL2_OK = False

if not _HCL2_OK:
    # Another venv (e.g. one with checkov's bc-python-hcl2, or none at all):
    # skip, unless run by scripts/check-terraform.sh, which must never skip.
    if os.environ.get("TERRAFORM_CHECKS_STRICT") == "1":
        raise ImportError("python-hcl2 >= 8 (with SerializationOptions) is required")
    pytest.skip("python-hcl2 >= 8 not installed: run scripts/check-terraform.sh", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES_DIR = TERRAFORM / "modules"
ENVS_DIR = TERRAFORM / "envs"

MODULE_DIRS = sorted(p for p in MODULES_DIR.iterdir() if p.is_dir())
ENV_DIRS = sorted(p for p in ENVS_DIR.iterdir() if p.is_dir())
ALL_DIRS = MODULE_DIRS + ENV_DIRS

REQUIRED_MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")

# python-hcl2 8.x keeps the quotes of strings unless told otherwise.
_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False)

# Module block arguments that are Terraform meta-arguments, not module inputs.
MODULE_META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each"}

# Resource types used here that take a `tags` argument in the AWS provider.
# Any resource that sets `tags` is treated as taggable as well.
TAGGABLE_TYPES = {
    "aws_appautoscaling_target",
    "aws_cloudwatch_event_rule",
    "aws_cloudwatch_log_group",
    "aws_cloudwatch_metric_alarm",
    "aws_default_security_group",
    "aws_ecr_repository",
    "aws_elasticache_replication_group",
    "aws_elasticache_subnet_group",
    "aws_ecs_cluster",
    "aws_ecs_service",
    "aws_ecs_task_definition",
    "aws_eip",
    "aws_flow_log",
    "aws_iam_policy",
    "aws_iam_role",
    "aws_internet_gateway",
    "aws_kinesis_stream",
    "aws_kms_key",
    "aws_lb",
    "aws_lb_listener",
    "aws_lb_listener_rule",
    "aws_lb_target_group",
    "aws_mwaa_environment",
    "aws_nat_gateway",
    "aws_redshiftserverless_namespace",
    "aws_redshiftserverless_workgroup",
    "aws_route_table",
    "aws_s3_bucket",
    "aws_secretsmanager_secret",
    "aws_security_group",
    "aws_sns_topic",
    "aws_subnet",
    "aws_vpc",
    "aws_vpc_endpoint",
    "aws_vpc_security_group_egress_rule",
    "aws_vpc_security_group_ingress_rule",
    "aws_wafv2_web_acl",
}

# Resource types used here that have no `tags` argument. A type in neither
# set fails test_every_resource_type_is_classified_as_taggable_or_not, so
# adding a new resource type forces a decision.
UNTAGGABLE_TYPES = {
    "aws_appautoscaling_policy",
    "aws_cloudwatch_dashboard",
    "aws_cloudwatch_event_target",
    "aws_cloudwatch_log_metric_filter",
    "aws_ecr_lifecycle_policy",
    "aws_iam_role_policy",
    "aws_kms_alias",
    "aws_route",
    "aws_route_table_association",
    "aws_s3_bucket_lifecycle_configuration",
    "aws_s3_bucket_logging",
    "aws_s3_bucket_ownership_controls",
    "aws_s3_bucket_policy",
    "aws_s3_bucket_public_access_block",
    "aws_s3_bucket_server_side_encryption_configuration",
    "aws_s3_bucket_versioning",
    "aws_secretsmanager_secret_version",
    "aws_sns_topic_policy",
    "aws_sns_topic_subscription",
    "aws_wafv2_web_acl_association",
    "aws_wafv2_web_acl_logging_configuration",
}

# Arguments that carry a secret value; none may appear in our code.
SECRET_ARGUMENTS = {
    "admin_user_password",
    "master_password",
    "password",
    "secret_string",
    "secret_binary",
    "admin_user_password_wo",
    "master_password_wo",
    "secret_string_wo",
}

SECRET_TEXT_PATTERNS = {
    "literal password/secret/token assignment": re.compile(
        r"""(?imx)^\s*[\w-]*(password|passwd|secret|token|api_key|access_key|private_key)[\w-]*
            \s*=\s*"(?![^"]*\$\{)[^"]+"\s*$"""
    ),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}

# A secret-carrying argument is allowed only where its value is drawn by AWS
# (Secrets Manager's GetRandomPassword), never written in our code: the
# position store's AUTH token. (type, name, argument, the only value allowed)
GENERATED_SECRETS = {
    (
        "aws_secretsmanager_secret_version",
        "auth_token",
        "secret_string",
        "${data.aws_secretsmanager_random_password.auth_token.random_password}",
    ),
}

WORLD_CIDRS = {"0.0.0.0/0", "::/0"}


# ---------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------


def parse_hcl(text: str) -> dict[str, Any]:
    """Parse HCL text into python-hcl2's dict form, strings without quotes."""
    return hcl2.loads(text, serialization_options=_OPTIONS)


@functools.lru_cache(maxsize=None)
def parse_file(path: Path) -> dict[str, Any]:
    return parse_hcl(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def parse_dir(directory: Path) -> dict[str, list]:
    """Merge the top-level blocks of every .tf file of one directory."""
    merged: dict[str, list] = {}
    for tf in sorted(directory.glob("*.tf")):
        for block_type, blocks in parse_file(tf).items():
            merged.setdefault(block_type, []).extend(blocks)
    return merged


def _clean(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k != "__is_block__"}
    return body


def variables(doc: dict) -> dict[str, dict]:
    return {name: _clean(body) for block in doc.get("variable", []) for name, body in block.items()}


def outputs(doc: dict) -> dict[str, dict]:
    return {name: _clean(body) for block in doc.get("output", []) for name, body in block.items()}


def module_calls(doc: dict) -> dict[str, dict]:
    return {name: _clean(body) for block in doc.get("module", []) for name, body in block.items()}


def resources(doc: dict) -> Iterator[tuple[str, str, dict]]:
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            for rname, body in named.items():
                yield rtype, rname, _clean(body)


def strings_in(value: Any) -> Iterator[str]:
    """Every string anywhere inside a parsed value (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def keys_in(value: Any) -> Iterator[str]:
    """Every dict key anywhere inside a parsed value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from keys_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from keys_in(v)


def module_source_dir(env_dir: Path, call: dict) -> Path:
    return (env_dir / call["source"]).resolve()


def tf_files() -> list[Path]:
    return sorted(TERRAFORM.rglob("*.tf")) + sorted(TERRAFORM.rglob("*.tfvars"))


# ---------------------------------------------------------------------------
# Checkers: each returns a list of human-readable problems
# ---------------------------------------------------------------------------


def variable_problems(doc: dict) -> list[str]:
    """Every variable has a description, then a type, then (optionally) a default."""
    problems = []
    for name, body in variables(doc).items():
        keys = list(body)
        for required in ("description", "type"):
            if required not in keys:
                problems.append(f"variable {name!r} has no {required}")
        if isinstance(body.get("description"), str) and not body["description"].strip():
            problems.append(f"variable {name!r} has an empty description")
        order = [k for k in ("description", "type", "default") if k in keys]
        if order != sorted(order, key=keys.index):
            problems.append(f"variable {name!r}: arguments must come in the order description, type, default")
    return problems


def required_inputs(module_doc: dict) -> set[str]:
    return {name for name, body in variables(module_doc).items() if "default" not in body}


def module_call_problems(call_name: str, call: dict, module_doc: dict) -> list[str]:
    """A module call passes only declared inputs and every required input."""
    declared = set(variables(module_doc))
    passed = set(call) - MODULE_META_ARGUMENTS
    problems = [f"module {call_name!r} passes undeclared input {i!r}" for i in sorted(passed - declared)]
    problems += [
        f"module {call_name!r} misses required input {i!r}" for i in sorted(required_inputs(module_doc) - passed)
    ]
    return problems


_MODULE_REF = re.compile(r"\bmodule\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)")


def module_output_reference_problems(doc: dict, outputs_of_call: dict[str, set[str]]) -> list[str]:
    """Every module.X.Y reference names a called module X that declares output Y."""
    problems = []
    for text in strings_in(doc):
        for call_name, output in _MODULE_REF.findall(text):
            if call_name not in outputs_of_call:
                problems.append(f"reference module.{call_name}.{output}: no module {call_name!r} is called")
            elif output not in outputs_of_call[call_name]:
                problems.append(f"reference module.{call_name}.{output}: module has no output {output!r}")
    return sorted(set(problems))


def is_taggable(rtype: str, body: dict) -> bool:
    return rtype in TAGGABLE_TYPES or "tags" in body


def tag_problems(doc: dict) -> list[str]:
    """Every taggable resource sets tags built from var.tags."""
    problems = []
    for rtype, rname, body in resources(doc):
        if not is_taggable(rtype, body):
            continue
        tags = body.get("tags")
        if tags is None:
            problems.append(f"{rtype}.{rname} sets no tags")
        elif not any("var.tags" in s for s in strings_in(tags)):
            problems.append(f"{rtype}.{rname} sets tags without var.tags")
    return problems


def secret_value_problems(text: str, doc: dict | None = None) -> list[str]:
    """No secret value in the text, no secret-carrying argument, no secret default."""
    problems = [
        f"{label}: {m.group(0).strip()!r}"
        for label, pattern in SECRET_TEXT_PATTERNS.items()
        for m in pattern.finditer(text)
    ]
    if doc is not None:
        for rtype, rname, body in resources(doc):
            for key in sorted(set(keys_in(body)) & SECRET_ARGUMENTS):
                if (rtype, rname, key, body.get(key)) in GENERATED_SECRETS:
                    continue
                problems.append(f"{rtype}.{rname} sets secret argument {key!r}")
        for name, body in variables(doc).items():
            if re.search(r"password|secret|token", name) and body.get("default") not in (None, ""):
                if isinstance(body.get("default"), str):
                    problems.append(f"variable {name!r} has a default secret value")
    return problems


def _resolve_cidrs(expr: Any, body: dict, module_vars: dict[str, dict]) -> set[str]:
    """Best-effort static value of a CIDR argument: literals, var.X, each.value over var.X."""
    if isinstance(expr, list):
        return set().union(*(_resolve_cidrs(e, body, module_vars) for e in expr)) if expr else set()
    if not isinstance(expr, str):
        return set()
    var_ref = re.fullmatch(r"\$\{(?:toset\()?var\.([\w-]+)\)?\}", expr)
    if var_ref:
        default = module_vars.get(var_ref.group(1), {}).get("default")
        return _resolve_cidrs(default, body, module_vars) if default is not None else set()
    if expr in ("${each.value}", "${each.key}") and "for_each" in body:
        return _resolve_cidrs(body["for_each"], body, module_vars)
    return {expr}


def _is_alb_https(body: dict, from_port: Any, to_port: Any) -> bool:
    """443 only, into the security group named `alb` (the ingest load balancer's)."""
    sg_ref = " ".join(strings_in(body.get("security_group_id", "")))
    return from_port == 443 and to_port == 443 and bool(re.search(r"\baws_security_group\.alb\b", sg_ref))


def open_ingress_problems(doc: dict) -> list[str]:
    """No ingress from 0.0.0.0/0 or ::/0, except 443 into the load balancer's security group."""
    module_vars = variables(doc)
    problems = []

    def check(rtype: str, rname: str, body: dict, cidr_exprs: list, from_port: Any, to_port: Any) -> None:
        cidrs = set()
        for expr in cidr_exprs:
            cidrs |= _resolve_cidrs(expr, body, module_vars)
        if cidrs & WORLD_CIDRS and not _is_alb_https(body, from_port, to_port):
            problems.append(f"{rtype}.{rname} opens ports {from_port}-{to_port} to the world")

    for rtype, rname, body in resources(doc):
        if rtype == "aws_security_group":
            for rule in body.get("ingress", []):
                rule = _clean(rule)
                check(rtype, rname, rule, [rule.get("cidr_blocks", []), rule.get("ipv6_cidr_blocks", [])],
                      rule.get("from_port"), rule.get("to_port"))
        elif rtype == "aws_security_group_rule" and body.get("type") == "ingress":
            check(rtype, rname, body, [body.get("cidr_blocks", []), body.get("ipv6_cidr_blocks", [])],
                  body.get("from_port"), body.get("to_port"))
        elif rtype == "aws_vpc_security_group_ingress_rule":
            check(rtype, rname, body, [body.get("cidr_ipv4"), body.get("cidr_ipv6")],
                  body.get("from_port"), body.get("to_port"))
    return problems


def readme_problems(readme_text: str, module_doc: dict) -> list[str]:
    """The README has a markdown table row for each variable and each output."""
    problems = []
    for kind, names in (("variable", variables(module_doc)), ("output", outputs(module_doc))):
        for name in names:
            if not re.search(rf"^\|\s*`{re.escape(name)}`\s*\|", readme_text, re.MULTILINE):
                problems.append(f"README has no table row for {kind} `{name}`")
    return problems


# ---------------------------------------------------------------------------
# Tests on the real code
# ---------------------------------------------------------------------------


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(TERRAFORM)) for p in paths]


def test_there_are_ten_modules_and_two_environments():
    assert [p.name for p in MODULE_DIRS] == sorted(
        ["network", "stream", "lake", "registry", "ingest", "compactor", "warehouse", "orchestration", "monitoring",
         "position_store"]
    )
    assert [p.name for p in ENV_DIRS] == ["dev", "prod"]


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_module_has_main_variables_outputs_versions_and_a_readme(module_dir):
    missing = [f for f in REQUIRED_MODULE_FILES if not (module_dir / f).is_file()]
    assert missing == []


@pytest.mark.parametrize("directory", ALL_DIRS, ids=_ids(ALL_DIRS))
def test_every_variable_has_a_description_and_a_type_in_that_order(directory):
    assert variable_problems(parse_dir(directory)) == []


@pytest.mark.parametrize("directory", ALL_DIRS, ids=_ids(ALL_DIRS))
def test_every_output_has_a_description_and_a_thing_attribute_name(directory):
    problems = []
    for name, body in outputs(parse_dir(directory)).items():
        if not body.get("description"):
            problems.append(f"output {name!r} has no description")
        if not re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", name):
            problems.append(f"output {name!r} is not named thing_attribute")
    assert problems == []


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_module_declares_a_tags_input_of_type_map_of_string(module_dir):
    tags = variables(parse_dir(module_dir)).get("tags")
    assert tags is not None and tags["type"] == "${map(string)}"


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_module_requires_terraform_1_6_and_aws_provider_major_5_only(module_dir):
    terraform_block = _clean(parse_file(module_dir / "versions.tf")["terraform"][0])
    assert terraform_block["required_version"] == ">= 1.6"
    aws = terraform_block["required_providers"][0]["aws"]
    assert aws["source"] == "hashicorp/aws"
    # "~> 5.N": any 5.x from 5.N on, never 6.x (a fresh init must not pick a new major).
    assert re.fullmatch(r"~> 5\.\d+", aws["version"]), aws["version"]


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_every_environment_pins_aws_provider_major_5_and_commits_a_lock_file_for_it(env_dir):
    terraform_block = _clean(parse_file(env_dir / "versions.tf")["terraform"][0])
    aws = terraform_block["required_providers"][0]["aws"]
    assert re.fullmatch(r"~> 5\.\d+", aws["version"]), aws["version"]
    lock = env_dir / ".terraform.lock.hcl"
    assert lock.is_file(), f"{lock.relative_to(ROOT)} must be committed (terraform init writes it)"
    provider = _clean(parse_file(lock)["provider"][0]["registry.terraform.io/hashicorp/aws"])
    assert provider["version"].startswith("5."), provider["version"]
    assert provider["hashes"], "the lock file records the provider's hashes"


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_every_environment_calls_every_module_with_declared_and_required_inputs_only(env_dir):
    calls = module_calls(parse_dir(env_dir))
    called_dirs = {module_source_dir(env_dir, c) for c in calls.values()}
    assert called_dirs == {p.resolve() for p in MODULE_DIRS}
    problems = []
    for name, call in calls.items():
        problems += module_call_problems(name, call, parse_dir(module_source_dir(env_dir, call)))
    assert problems == []


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_every_module_output_an_environment_references_exists(env_dir):
    doc = parse_dir(env_dir)
    outputs_of_call = {
        name: set(outputs(parse_dir(module_source_dir(env_dir, call)))) for name, call in module_calls(doc).items()
    }
    assert module_output_reference_problems(doc, outputs_of_call) == []


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_environments_are_thin_compositions_without_resources_or_data_sources(env_dir):
    doc = parse_dir(env_dir)
    assert doc.get("resource", []) == []
    assert doc.get("data", []) == []


def test_each_environment_has_its_own_s3_backend_key_with_native_locking():
    keys = []
    for env_dir in ENV_DIRS:
        backends = [
            _clean(b["s3"])
            for tf in env_dir.glob("*.tf")
            for t in parse_file(tf).get("terraform", [])
            for b in t.get("backend", [])
        ]
        assert len(backends) == 1, f"{env_dir.name}: expected one backend \"s3\" block"
        assert backends[0].get("use_lockfile") is True
        assert backends[0].get("encrypt") is True
        assert env_dir.name in backends[0]["key"]
        keys.append(backends[0]["key"])
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_every_tfvars_value_sets_a_declared_variable(env_dir):
    declared = set(variables(parse_dir(env_dir)))
    assigned = set(parse_file(env_dir / "terraform.tfvars"))
    assert assigned - declared == set()


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_every_required_environment_input_is_in_tfvars_or_documented_for_the_operator(env_dir):
    readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
    tfvars = parse_file(env_dir / "terraform.tfvars")
    tfvars_text = (env_dir / "terraform.tfvars").read_text(encoding="utf-8")
    missing = []
    for name in sorted(required_inputs(parse_dir(env_dir)) - set(tfvars)):
        documented = re.search(rf"^\|\s*`{name}`\s*\|", readme, re.MULTILINE)
        commented = re.search(rf"^#\s*{name}\s*=", tfvars_text, re.MULTILINE)
        if not (documented and commented):
            missing.append(name)
    assert missing == []


def test_prod_is_sized_for_production_and_dev_for_cost():
    dev = parse_file(ENVS_DIR / "dev" / "terraform.tfvars")
    prod = parse_file(ENVS_DIR / "prod" / "terraform.tfvars")
    assert dev["single_nat_gateway"] is True and prod["single_nat_gateway"] is False
    assert dev["stream_mode"] == "ON_DEMAND" or dev["stream_shard_count"] == 1
    # Shard counts and task sizes follow from scripts/capacity.py (tests/infra/test_capacity.py).
    assert prod["stream_mode"] == "PROVISIONED" and prod["stream_shard_count"] >= 1
    assert dev["redshift_base_capacity"] == 8 and prod["redshift_base_capacity"] == 32
    assert prod["ingest_min_capacity"] > dev["ingest_min_capacity"]
    assert dev["ingest_max_capacity"] <= 2
    assert prod["stream_retention_hours"] > dev["stream_retention_hours"]
    assert prod["log_retention_days"] > dev["log_retention_days"]
    assert prod["alb_deletion_protection"] is True


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_taggable_resource_merges_var_tags(module_dir):
    assert tag_problems(parse_dir(module_dir)) == []


def test_every_resource_type_is_classified_as_taggable_or_not():
    used = {rtype for d in MODULE_DIRS for rtype, _, _ in resources(parse_dir(d))}
    assert used - TAGGABLE_TYPES - UNTAGGABLE_TYPES == set()
    assert TAGGABLE_TYPES & UNTAGGABLE_TYPES == set()


@pytest.mark.parametrize("path", tf_files(), ids=_ids(tf_files()))
def test_no_terraform_file_contains_a_literal_secret(path):
    doc = parse_file(path)
    assert secret_value_problems(path.read_text(encoding="utf-8"), doc) == []


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_no_security_group_allows_ingress_from_the_world_except_https_into_the_load_balancer(module_dir):
    assert open_ingress_problems(parse_dir(module_dir)) == []


@pytest.mark.parametrize("env_dir", ENV_DIRS, ids=_ids(ENV_DIRS))
def test_no_environment_passes_a_world_open_cidr_to_any_module(env_dir):
    offending = [
        p.name
        for p in sorted(env_dir.glob("*.tf*"))
        if any(c in p.read_text(encoding="utf-8") for c in WORLD_CIDRS)
    ]
    assert offending == []


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_module_readme_has_a_table_row_for_each_input_and_output(module_dir):
    readme = (module_dir / "README.md").read_text(encoding="utf-8")
    assert readme_problems(readme, parse_dir(module_dir)) == []


def test_every_checkov_skip_names_a_check_and_gives_a_reason():
    bad = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov:skip" in line and not re.search(r"#checkov:skip=CKV2?_AWS_\d+:\S.{10,}", line):
                bad.append(f"{path.relative_to(TERRAFORM)}:{n}")
    assert bad == []


# ---------------------------------------------------------------------------
# The checkers can fail: each one is fed a small bad snippet
# ---------------------------------------------------------------------------

BAD_VARIABLES = """
variable "no_type" {
  description = "x"
}
variable "no_description" {
  type = string
}
variable "wrong_order" {
  type        = string
  description = "x"
}
variable "fine" {
  description = "x"
  type        = string
  default     = "y"
}
"""


def test_variable_checker_reports_missing_description_missing_type_and_wrong_order():
    problems = variable_problems(parse_hcl(BAD_VARIABLES))
    assert problems == [
        "variable 'no_type' has no type",
        "variable 'no_description' has no description",
        "variable 'wrong_order': arguments must come in the order description, type, default",
    ]


def test_module_call_checker_reports_undeclared_and_missing_inputs():
    module_doc = parse_hcl(
        """
        variable "needed" {
          description = "x"
          type        = string
        }
        variable "optional" {
          description = "x"
          type        = string
          default     = "y"
        }
        """
    )
    call = module_calls(parse_hcl('module "m" {\n  source = "./m"\n  typo = 1\n}\n'))["m"]
    assert module_call_problems("m", call, module_doc) == [
        "module 'm' passes undeclared input 'typo'",
        "module 'm' misses required input 'needed'",
    ]


def test_output_reference_checker_reports_unknown_outputs_and_unknown_modules():
    doc = parse_hcl(
        """
        module "b" {
          source = "./b"
          ok     = module.a.vpc_id
          bad    = module.a.vpc_idd
          gone   = module.zzz.thing
        }
        """
    )
    assert module_output_reference_problems(doc, {"a": {"vpc_id"}, "b": set()}) == [
        "reference module.a.vpc_idd: module has no output 'vpc_idd'",
        "reference module.zzz.thing: no module 'zzz' is called",
    ]


def test_tag_checker_reports_missing_tags_and_tags_without_var_tags():
    doc = parse_hcl(
        """
        resource "aws_s3_bucket" "untagged" {
          bucket = "x"
        }
        resource "aws_sqs_queue" "literal" {
          tags = { Name = "x" }
        }
        resource "aws_kinesis_stream" "merged" {
          tags = merge(var.tags, { Name = "x" })
        }
        resource "aws_kms_alias" "not_taggable" {
          name = "alias/x"
        }
        """
    )
    assert tag_problems(doc) == [
        "aws_s3_bucket.untagged sets no tags",
        "aws_sqs_queue.literal sets tags without var.tags",
    ]


def test_secret_checker_reports_literal_passwords_keys_and_secret_arguments():
    text = """
resource "aws_redshiftserverless_namespace" "x" {
  admin_user_password = "Sup3rSecret!"
}
resource "aws_secretsmanager_secret_version" "y" {
  secret_string = var.value
}
variable "db_password" {
  description = "x"
  type        = string
  default     = "hunter22"
}
locals {
  key = "AKIAABCDEFGHIJKLMNOP"
}
"""
    problems = secret_value_problems(text, parse_hcl(text))
    assert any("admin_user_password = \"Sup3rSecret!\"" in p for p in problems)
    assert any("AWS access key id" in p for p in problems)
    assert "aws_secretsmanager_secret_version.y sets secret argument 'secret_string'" in problems
    assert "variable 'db_password' has a default secret value" in problems


def test_secret_checker_accepts_references_and_managed_passwords():
    text = """
resource "aws_redshiftserverless_namespace" "x" {
  manage_admin_password            = true
  admin_password_secret_kms_key_id = aws_kms_key.k.arn
  description                      = "the secret is managed by AWS"
}
"""
    assert secret_value_problems(text, parse_hcl(text)) == []


def test_ingress_checker_reports_world_open_ports_but_accepts_https_into_the_load_balancer():
    doc = parse_hcl(
        """
        variable "ssh_cidrs" {
          description = "x"
          type        = list(string)
          default     = ["0.0.0.0/0"]
        }
        resource "aws_vpc_security_group_ingress_rule" "ssh" {
          for_each          = toset(var.ssh_cidrs)
          security_group_id = aws_security_group.bastion.id
          from_port         = 22
          to_port           = 22
          cidr_ipv4         = each.value
        }
        resource "aws_vpc_security_group_ingress_rule" "alb_https" {
          security_group_id = aws_security_group.alb.id
          from_port         = 443
          to_port           = 443
          cidr_ipv4         = "0.0.0.0/0"
        }
        resource "aws_security_group" "legacy" {
          ingress {
            from_port        = 0
            to_port          = 65535
            protocol         = "tcp"
            cidr_blocks      = ["10.0.0.0/8"]
            ipv6_cidr_blocks = ["::/0"]
          }
        }
        resource "aws_security_group_rule" "db" {
          type        = "ingress"
          from_port   = 5439
          to_port     = 5439
          cidr_blocks = ["0.0.0.0/0"]
        }
        """
    )
    assert open_ingress_problems(doc) == [
        "aws_vpc_security_group_ingress_rule.ssh opens ports 22-22 to the world",
        "aws_security_group.legacy opens ports 0-65535 to the world",
        "aws_security_group_rule.db opens ports 5439-5439 to the world",
    ]


def test_readme_checker_reports_undocumented_inputs_and_outputs():
    doc = parse_hcl(
        """
        variable "documented" {
          description = "x"
          type        = string
        }
        variable "forgotten" {
          description = "x"
          type        = string
        }
        output "thing_id" {
          description = "x"
          value       = 1
        }
        """
    )
    readme = "| Name | Description |\n|---|---|\n| `documented` | x |\n"
    assert readme_problems(readme, doc) == [
        "README has no table row for variable `forgotten`",
        "README has no table row for output `thing_id`",
    ]


# ---------------------------------------------------------------------------
# Log retention: every log group, including those AWS services would create
# themselves with "never expire" (MWAA, Redshift Serverless)
# ---------------------------------------------------------------------------

MWAA_LOG_TYPES = {"DAGProcessing", "Scheduler", "Task", "WebServer", "Worker"}


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=_ids(MODULE_DIRS))
def test_every_log_group_has_a_retention_from_an_input(module_dir):
    problems = []
    for rtype, rname, body in resources(parse_dir(module_dir)):
        if rtype == "aws_cloudwatch_log_group":
            retention = body.get("retention_in_days")
            if not (isinstance(retention, str) and retention.startswith("${var.")):
                problems.append(f"{rtype}.{rname}: retention_in_days must come from an input, got {retention!r}")
    assert problems == []


def _log_groups(module: str) -> dict[str, dict]:
    return {n: b for t, n, b in resources(parse_dir(MODULES_DIR / module)) if t == "aws_cloudwatch_log_group"}


def test_mwaa_log_groups_are_created_by_terraform_with_retention_before_the_environment():
    """MWAA creates airflow-<env>-<Type> groups that never expire unless they exist already."""
    groups = _log_groups("orchestration")
    airflow = groups.get("airflow")
    assert airflow is not None, "orchestration must create the MWAA log groups itself"
    assert airflow["name"] == "airflow-${var.name}-${each.key}"
    keys = set(re.findall(r'"(\w+)"', " ".join(strings_in(airflow["for_each"]))))
    assert keys == MWAA_LOG_TYPES
    env = next(b for t, n, b in resources(parse_dir(MODULES_DIR / "orchestration")) if t == "aws_mwaa_environment")
    assert "${aws_cloudwatch_log_group.airflow}" in env["depends_on"]


def test_redshift_serverless_log_groups_are_created_by_terraform_with_retention_before_the_namespace():
    """Redshift Serverless exports to /aws/redshift/serverless/<log type>, never expiring unless it exists."""
    groups = _log_groups("warehouse")
    redshift = groups.get("redshift")
    assert redshift is not None, "warehouse must create the Redshift Serverless log groups itself"
    assert redshift["name"] == "/aws/redshift/serverless/${each.value}"
    assert "var.log_exports" in " ".join(strings_in(redshift["for_each"]))
    namespace = next(
        b for t, n, b in resources(parse_dir(MODULES_DIR / "warehouse")) if t == "aws_redshiftserverless_namespace"
    )
    assert "${aws_cloudwatch_log_group.redshift}" in namespace["depends_on"]
