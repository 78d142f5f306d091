# Tern — developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS       := .tools
VENV        := $(TOOLS)/venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
NATS_SERVER := $(VENV)/bin/nats-server
PYTHON      ?= python3
NATS_SERVER_VERSION := 2.15.1
STAMP       := $(TOOLS)/.setup-$(NATS_SERVER_VERSION)
ASYNCAPI_SPECS_VERSION := 6.11.1
ASYNCAPI_SPECS := $(TOOLS)/node_modules/@asyncapi/specs/.tern-$(ASYNCAPI_SPECS_VERSION)
# Where cargo puts what it builds (CARGO_TARGET_DIR, when set, wins).
TARGET      := $(or $(CARGO_TARGET_DIR),target)

export TERN_NATS_SERVER ?= $(abspath $(NATS_SERVER))

SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup browser test conformance lint fmt cli-docs build demo bench bench-quick chaos clean-tools sim deploy-check image

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP) browser ## install what the tests need (idempotent): nats-server and Python SDKs in .tools/, Chromium
$(STAMP): tools/requirements.txt
	@mkdir -p $(TOOLS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r tools/requirements.txt
	@$(NATS_SERVER) --version
	@touch $@

# The official AsyncAPI JSON Schemas (npm @asyncapi/specs), pinned, for events-check.
setup: $(ASYNCAPI_SPECS)
$(ASYNCAPI_SPECS):
	@mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --no-save --prefix $(TOOLS) @asyncapi/specs@$(ASYNCAPI_SPECS_VERSION)
	@touch $@

lint: setup ## formatting and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

browser: ## Debian's headless Chromium for the HTML report test, where missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null || chromium-browser --version

test: lint ## setup, lint, every workspace test (real nats-server), then the Azure SDK conformance suite
	@if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --locked --profile ci; \
	else \
	  echo "cargo-nextest not found; using cargo test"; cargo test --workspace --locked; \
	fi
	$(MAKE) --no-print-directory conformance
	$(MAKE) --no-print-directory deploy-check

deploy-check: ## the Helm chart lints and renders, where helm is installed (CI may not have it)
	@if command -v helm >/dev/null 2>&1; then \
	  helm lint --strict deploy/helm/tern && helm template tern deploy/helm/tern >/dev/null && echo "helm: the chart renders"; \
	else echo "helm not installed: skipping the chart check (docs/deploy.md: helm lint, helm template)"; fi

image: ## the container image (docker build; needs a Docker daemon)
	docker build -t tern:dev .

conformance: setup ## Azure's official Python SDK, unchanged, against tern-asr-sim
	cargo build --locked -p tern-asr-sim
	TERN_ASR_SIM_BIN=$(abspath $(TARGET)/debug/tern-asr-sim) $(PY) -m pytest tests/conformance -q

.PHONY: schemas events-check
# make test checks the event contract first (cheap, and a broken document fails fast).
test: events-check

schemas: ## regenerate the event JSON Schemas and AsyncAPI document in docs/events/ (a test fails when they drift)
	cargo run --locked -q -p tern-bus --bin tern-schemas -- .

events-check: setup ## the event schemas are JSON Schema 2020-12 and docs/events/asyncapi.yaml is valid AsyncAPI 3.0.0
	$(PY) -m pytest tests/events -q

fmt: ## format the code
	cargo fmt --all

cli-docs: ## write docs/cli.md, every tern command's --help (a tern-cli test checks it)
	TERN_BLESS=1 cargo test -p tern-cli --bin tern docs_cli_md

build: ## debug build of every crate
	cargo build --workspace --locked

sim: ## run the ASR simulator alone with 200 VMs ready for failback (Ctrl-C stops it)
	cargo run --locked -p tern-asr-sim -- --seed-vms 200 --seed-state ready-for-failback --listen 127.0.0.1:8450

demo: $(STAMP) ## the whole stack on this machine, failing back a 200-VM demo estate
	cargo build --locked --workspace --bins
	$(TARGET)/debug/tern up --demo

chaos: setup ## the fault suite as a soak (more VMs, more repetitions of every fault) and 1,000,000 simulated plans (make test runs short forms)
	cargo build --locked --workspace --bins
	TERN_FAULTS_VMS=$${TERN_FAULTS_VMS:-200} TERN_FAULTS_ROUNDS=$${TERN_FAULTS_ROUNDS:-3} \
	  cargo nextest run --locked -p tern-faults --profile chaos
	TERN_SIM_PLANS=$${TERN_SIM_PLANS:-1000000} cargo test --locked -p tern-planner --test simulation -- --nocapture

# The processes the benchmark starts, built for release (it measures nothing else).
BENCH_BUILD := cargo build --release --locked --bins -p tern-bench -p tern-asr-sim -p tern-planner \
               -p tern-failover -p tern-reprotect -p tern-cleanup

bench: $(STAMP) ## fleet benchmark vs the design's targets, release build (S1 10,000 VMs, S2 2,000, S3 500, S4 3×2×1,000; 3 runs; BENCH_ARGS=...)
	$(BENCH_BUILD)
	$(TARGET)/release/tern-bench $(BENCH_ARGS)

bench-quick: $(STAMP) ## the benchmark with small fleets and one run each (about 2 minutes once built)
	$(BENCH_BUILD)
	$(TARGET)/release/tern-bench --quick $(BENCH_ARGS)

clean-tools: ## remove the tools dir
	rm -rf $(TOOLS)
