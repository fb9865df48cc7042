# Sourced by scripts/check-terraform.sh and tests/infra/moto_apply/run.sh:
# point Terraform at the hashicorp/aws provider that ships with the machine
# image as a filesystem mirror, so `terraform init` works offline.
#
#   tf_use_mirror ROOT    finds terraform and the mirror, writes
#                         ROOT/.tools/terraform/cli.tfrc, exports
#                         TF_CLI_CONFIG_FILE; exits 1 (loudly) when either
#                         is missing. TF_PROVIDER_MIRROR=<dir> skips the search.

tf_use_mirror() {
  local root="$1" mirror="${TF_PROVIDER_MIRROR:-}" binary
  if ! command -v terraform >/dev/null 2>&1; then
    echo "FATAL: no terraform binary on PATH (the machine image ships Terraform >= 1.10)" >&2
    exit 1
  fi
  if [[ -z "$mirror" ]]; then
    # <mirror>/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/terraform-provider-aws_*
    binary="$(find /opt / -xdev -name 'terraform-provider-aws_*' \
      -path '*/registry.terraform.io/hashicorp/aws/5.*/linux_amd64/*' -print -quit 2>/dev/null || true)"
    if [[ -z "$binary" ]]; then
      echo "FATAL: no hashicorp/aws 5.x provider mirror on this machine" >&2
      echo "       (looked for registry.terraform.io/hashicorp/aws/5.*/linux_amd64/terraform-provider-aws_*;" >&2
      echo "        set TF_PROVIDER_MIRROR=<mirror root> if it lives elsewhere)" >&2
      exit 1
    fi
    mirror="$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$binary")")")")")")"
  fi
  if [[ ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]]; then
    echo "FATAL: $mirror is not a provider mirror (no registry.terraform.io/hashicorp/aws inside)" >&2
    exit 1
  fi
  mkdir -p "$root/.tools/terraform"
  # No `direct` fallback: a provider missing from the mirror fails init
  # instead of trying the network.
  cat >"$root/.tools/terraform/cli.tfrc" <<CONFIG
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
CONFIG
  export TF_CLI_CONFIG_FILE="$root/.tools/terraform/cli.tfrc"
  export TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
  echo "terraform $(terraform version | head -1 | cut -d' ' -f2), provider mirror $mirror"
}
