#!/usr/bin/env bash
# test-browser.sh: the live map (GET /map) and the customer tracking page
# (GET /track) in headless Chromium.
#
# Installs what it needs, idempotently: the Debian packages chromium,
# chromium-driver and fonts-dejavu-core only when missing (apt-get, as root or
# through sudo), the Python venv .tools/e2e-venv from tests/e2e/requirements.txt
# (Selenium), Leaflet from npm (scripts/web-assets.sh). Then builds ingest-api
# and runs tests/e2e/test_live_map.py and tests/e2e/test_tracking_page.py,
# which leave screenshots in target/test-artifacts/.
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
VENV=.tools/e2e-venv

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
if ((${#missing[@]})); then
  printf '==> installing %s\n' "${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "test-browser.sh: need root or sudo to install ${missing[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

scripts/ensure-venv.sh "$VENV" tests/e2e/requirements.txt
scripts/web-assets.sh
# `make test` passes SKIP_BUILD=1: its `cargo test --workspace` has just built
# target/debug/ingest-api (a narrower build would resolve features differently
# and rebuild).
if [[ -z "${SKIP_BUILD:-}" ]]; then
  "$CARGO" build --locked --workspace --bins
fi
# Selected tests: E2E_TESTS="test_live_map.LiveMapTest.test_leaflet_over_the_configured_tiles".
INGEST_API_BIN="$PWD/target/debug/ingest-api" \
  CHROMIUM="$(command -v chromium)" CHROMEDRIVER="$(command -v chromedriver)" \
  INGEST_ASSETS_DIR="$PWD/services/ingest-api/web/node_modules" \
  PYTHONPATH="$PWD/tests/e2e" \
  "$PWD/$VENV/bin/python" -m unittest -v ${E2E_TESTS:-test_live_map test_tracking_page}
