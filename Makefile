# mecplane — every entry point a person or CI uses. `make demo` and `make test` work on a fresh
# machine: `setup` installs what they need (Debian packages, pinned Python venvs, npm ci).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
VENV_INFRA  := .venv-infra
VENV_ST     := .venv-schemathesis
STAMPS      := .mecplane/stamps
CARGO       ?= cargo
export MECPLANE_FUNCTIONS_DIR ?= target/debug

.PHONY: help setup setup-apt setup-python setup-infra build build-all up down demo test test-rust test-infra test-unit test-e2e test-all \
        lint fmt clippy check-infra bench sam-build deploy destroy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# ---- setup --------------------------------------------------------------------------------------
$(STAMPS):
	@mkdir -p $@

setup-apt: | $(STAMPS) ## Debian packages: shellcheck, jq (stand-ins), util-linux (unshare), curl, openssl (node scripts), chromium + chromium-driver (dashboard browser test)
	@if ! command -v shellcheck >/dev/null || ! command -v jq >/dev/null || ! command -v unshare >/dev/null || ! command -v curl >/dev/null || ! command -v openssl >/dev/null || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "==> apt-get install shellcheck jq util-linux curl openssl chromium chromium-driver"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck jq util-linux curl openssl chromium chromium-driver >/dev/null; \
	fi

$(STAMPS)/venv: local/requirements.txt | $(STAMPS)
	@echo "==> Python venv $(VENV) (moto, pinned)"
	@python3 -m venv $(VENV) && $(VENV)/bin/pip install -q --disable-pip-version-check -r local/requirements.txt
	@touch $@

$(STAMPS)/venv-schemathesis: tests/requirements-schemathesis.txt | $(STAMPS)
	@echo "==> Python venv $(VENV_ST) (schemathesis, pinned)"
	@python3 -m venv $(VENV_ST) && $(VENV_ST)/bin/pip install -q --disable-pip-version-check -r tests/requirements-schemathesis.txt
	@touch $@

$(STAMPS)/venv-infra: infra/requirements.txt | $(STAMPS)
	@echo "==> Python venv $(VENV_INFRA) (cfn-lint, aws-sam-translator, checkov, pinned)"
	@python3 -m venv $(VENV_INFRA) && $(VENV_INFRA)/bin/pip install -q --disable-pip-version-check -r infra/requirements.txt
	@touch $@

$(STAMPS)/npm: package.json package-lock.json | $(STAMPS)
	@echo "==> npm ci (asl-validator)"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup-python: $(STAMPS)/venv $(STAMPS)/venv-schemathesis
setup-infra: $(STAMPS)/venv-infra $(STAMPS)/npm
setup: setup-apt setup-python setup-infra ## Install every tool the checks and the local stack need

# ---- build and the local stack -----------------------------------------------------------------
build: ## Build every function binary, the gateway and mecctl (debug)
	$(CARGO) build --workspace --bins

up: setup-apt setup-python build ## Start the local stack (moto + gateway) on 127.0.0.1
	@local/up.sh

down: ## Stop the local stack; leaves no process or port behind
	@local/down.sh

demo: setup-apt setup-python build ## Create, show and delete a 1+2 cluster on the local stack
	@local/demo.sh

# ---- checks ------------------------------------------------------------------------------------
fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-infra: setup-apt setup-infra ## Offline checks of the SAM template, state machines and scripts
	infra/check.sh
	infra/tests/test_checks.sh

# Every cargo command of `make test` selects the whole workspace with all targets: one feature
# set, so the AWS SDK compiles once (a narrower selection resolves other features and recompiles it).
build-all: ## Build every target of the workspace (bins, tests, examples) once
	$(CARGO) build --workspace --all-targets

test-unit: build-all ## Unit tests of every crate
	$(CARGO) test --workspace --lib --bins --test stack --test simulator

# Three tests at a time on 2 cores: an e2e test mostly waits on its stack (polls, simulated agents),
# so a third overlaps those waits (the 48 e2e tests: 467 s at 3 threads, 604 s at 2).
E2E_THREADS ?= 3

test-e2e: setup-apt setup-python build-all ## End-to-end tests against local stacks started on free ports
	$(CARGO) test --workspace --test e2e -- --test-threads $(E2E_THREADS)

test-all: setup-apt setup-python build-all ## Unit and end-to-end tests in one run
	$(CARGO) test --workspace -- --test-threads $(E2E_THREADS)

test: setup-apt ## Everything CI runs (the Rust checks and the infra checks side by side)
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-rust test-infra
	@echo "make test: all checks passed"

# The two branches of `make test`, each sequential inside: the infra checks are single-threaded
# Python, so they fill the cores the Rust build leaves idle (linking, the SDK's largest crates).
test-rust:
	@$(MAKE) --no-print-directory -j1 setup-python lint test-all

test-infra:
	@$(MAKE) --no-print-directory -j1 check-infra

bench: setup-apt setup-python ## Release sizes, cold start and local create/delete timings
	@local/bench.sh

sam-build: ## Build every function for arm64 with sam build (what deploy uploads; no AWS needed)
	infra/build.sh

deploy: ## Deploy to AWS with SAM (guided the first time)
	infra/deploy.sh

destroy: ## Remove the deployed stack
	infra/destroy.sh

clean: down ## Remove build output, venvs and local state
	rm -rf target $(VENV) $(VENV_INFRA) $(VENV_ST) .venv-bench node_modules .mecplane
