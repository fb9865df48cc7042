# Courier position platform: the two commands a newcomer needs are
#   make demo   the ingestion path end to end on one machine (no AWS, no Docker)
#   make test   every test; installs the tools it needs (idempotent)
# Everything else here is a building block of those two, or a benchmark.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
TOOLS := .tools
TEST_VENV := $(TOOLS)/test-venv

.PHONY: help web-assets demo airflow-ui test tools build lint fmt test-rust test-demo test-browser test-airflow test-infra test-infra-moto test-fuzz fuzz bench-ingest bench-ingest-instructions bench-compactor clean

help:
	@echo "make demo          run the ingestion path end to end on the embedded local stream, then the hourly Airflow DAG into PostgreSQL"
	@echo "make airflow-ui    Airflow's web UI on the demo's local setup (after make demo)"
	@echo "make test          lint, then every test (Rust, Kinesis via moto_server, Terraform checks and apply against moto_server)"
	@echo "make bench-ingest  ingestion benchmark (release build; numbers go in docs/performance.md)"
	@echo "make bench-ingest-instructions  instructions per position of the ingest path under callgrind (exact where timing is noisy)"
	@echo "make bench-compactor  compactor benchmark (release build)"
	@echo "make tools         install the Python test tools into $(TOOLS)/"
	@echo "make fmt           format the Rust code"
	@echo "make fuzz FUZZ_TARGET=record_decoder FUZZ_SECONDS=600   fuzz one target (scripts/fuzz.sh list)"

demo: web-assets
	scripts/demo.sh

airflow-ui:
	scripts/airflow-ui.sh

# Python tools for the tests: moto_server (a real Kinesis and S3 API server), hadolint,
# check-jsonschema (docker-compose.yml against the Compose specification).
tools: $(TEST_VENV)/.requirements.stamp
$(TEST_VENV)/.requirements.stamp: tests/requirements-tools.txt scripts/ensure-venv.sh
	scripts/ensure-venv.sh $(TEST_VENV) tests/requirements-tools.txt

# Leaflet for the map pages, from npm (services/ingest-api/web/package-lock.json); idempotent.
web-assets:
	scripts/web-assets.sh

build: web-assets
	$(CARGO) build --locked --workspace --all-targets --all-features

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

# The shared position store's tests need Redis at 127.0.0.1:6379 (started when down).
test-rust: tools
	scripts/ensure-redis.sh
	MOTO_SERVER=$(CURDIR)/$(TEST_VENV)/bin/moto_server $(CARGO) test --locked --workspace --all-features --lib --bins --tests
	$(CARGO) test --locked --workspace --all-features --doc

# make demo itself, shortened, on a free port and in a temporary directory.
test-demo: test-rust
	demo_dir=$$(mktemp -d) && demo_db=courier_test_demo_$$$$ && \
	trap 'rm -rf "$$demo_dir"; psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $$demo_db WITH (FORCE)" || true' EXIT && \
	DEMO_DIR="$$demo_dir" DEMO_DB="$$demo_db" DEMO_SECONDS=5 DEMO_COURIERS=20 DEMO_SKIP_BUILD=1 \
	DEMO_PORT=$$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
	scripts/demo.sh

# The live map (GET /map) in headless Chromium; installs chromium,
# chromium-driver and .tools/e2e-venv when missing.
test-browser: test-rust web-assets
	SKIP_BUILD=1 scripts/test-browser.sh

# The Airflow DAGs on the deployed Airflow (Terraform's airflow_version, MWAA's
# providers) and on the newest 3.x: DagBag integrity, SQL (sqlfluff Redshift,
# PostgreSQL), dag.test() end to end in local mode against PostgreSQL (started when
# it is not up), then the web UI in headless Chromium.
test-airflow: test-rust
	scripts/test-airflow.sh

test-infra: tools
	scripts/check-terraform.sh
	$(TEST_VENV)/bin/hadolint services/*/Dockerfile
	@echo "hadolint: Dockerfiles clean"
	$(TEST_VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# Terraform applied for real against moto_server (tests/infra/moto_apply, ~3 min):
# the modules moto can emulate, then target/debug/ingest-api and compactor on what
# apply created (built by test-rust), then terraform destroy.
test-infra-moto: test-rust
	tests/infra/moto_apply/run.sh

# The fuzz targets of fuzz/ (cargo-fuzz, installed into .tools/cargo on first
# use) for FUZZ_SECONDS each, built unoptimised; a crash, a hang or an
# out-of-memory fails the build and leaves the input in fuzz/artifacts/.
FUZZ_SECONDS ?= 20
test-fuzz:
	scripts/fuzz.sh smoke $(FUZZ_SECONDS)

# A longer run of one target (optimised, AddressSanitizer), as in
# docs/operations.md: make fuzz FUZZ_TARGET=record_decoder FUZZ_SECONDS=600
FUZZ_TARGET ?= record_decoder
fuzz:
	scripts/fuzz.sh run $(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS)

test: lint test-rust test-demo test-browser test-airflow test-infra test-infra-moto test-fuzz
	@echo "make test: all checks passed"

bench-ingest:
	$(CARGO) bench --locked -p ingest-api --bench ingest_load

# Instruction counts (valgrind's callgrind) repeat within half a percent for
# the same binary and requests, so they show changes of a few percent that
# the timed benchmark's run-to-run noise hides.
bench-ingest-instructions:
	@command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
	$(CARGO) build --release --locked -p ingest-api --bin ingest-api
	python3 scripts/ingest-instructions.py target/release/ingest-api

bench-compactor:
	$(CARGO) bench --locked -p compactor --bench compactor_load

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) demo-data
