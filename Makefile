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

.PHONY: help setup setup-apt setup-python setup-infra build build-all up down demo test test-infra test-unit test-e2e test-all \
        lint fmt fmt-check clippy check-infra bench sam-build deploy destroy clean

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

# The venvs are filled by uv (pinned, installed by pip into its own venv): the same pinned
# requirements, resolved to the same versions, in ~2 s of CPU each where pip spends 30-55 s
# unpacking and byte-compiling (.venv-infra: 57 -> 2.5 CPU-s). Modules compile when first imported.
UV_VERSION := 0.13.9
VENV_UV    := .venv-uv
UV         := $(VENV_UV)/bin/uv
# make_venv DIR REQUIREMENTS
make_venv = python3 -m venv $(1) && $(UV) pip install -q --python $(1)/bin/python -r $(2)

$(STAMPS)/uv: | $(STAMPS)
	@echo "==> uv $(UV_VERSION) (pinned) in $(VENV_UV), the installer of the venvs"
	@python3 -m venv $(VENV_UV) && $(VENV_UV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@touch $@

$(STAMPS)/venv: local/requirements.txt $(STAMPS)/uv | $(STAMPS)
	@echo "==> Python venv $(VENV) (moto, pinned)"
	@$(call make_venv,$(VENV),local/requirements.txt)
	@touch $@

$(STAMPS)/venv-schemathesis: tests/requirements-schemathesis.txt $(STAMPS)/uv | $(STAMPS)
	@echo "==> Python venv $(VENV_ST) (schemathesis, pinned)"
	@$(call make_venv,$(VENV_ST),tests/requirements-schemathesis.txt)
	@touch $@

$(STAMPS)/venv-infra: infra/requirements.txt $(STAMPS)/uv | $(STAMPS)
	@echo "==> Python venv $(VENV_INFRA) (cfn-lint, aws-sam-translator, checkov, pinned)"
	@$(call make_venv,$(VENV_INFRA),infra/requirements.txt)
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

fmt-check:
	$(CARGO) fmt --all -- --check

lint: fmt-check ## rustfmt and clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-infra: setup-apt setup-python setup-infra ## Offline checks of the SAM template, state machines and scripts
	infra/check.sh
	infra/tests/test_checks.sh

# Every cargo command of `make test` selects the whole workspace with all targets: one feature
# set, so the AWS SDK compiles once (a narrower selection resolves other features and recompiles it).
build-all: ## Build every target of the workspace (bins, tests, examples) once
	$(CARGO) build --workspace --all-targets

# The tests run in one pool of $(TEST_THREADS) processes with cargo-nextest (installed with the
# machine's toolchain): the unit and simulator tests overlap the end-to-end tests instead of
# running before them, one binary after another. Without nextest, `cargo test` runs them so.
# Four at a time on 2 cores: an e2e test mostly waits on its stack (polls, simulated agents), so
# more tests than cores overlap those waits (the 48 e2e tests: 467 s at 3 threads, 604 s at 2,
# before their motos were forked from a warm one; see below).
TEST_THREADS ?= 4
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
# They run under one warm moto that forks each local stack's moto (local/moto_zygote.py): a cold
# moto spends ~3 s of CPU importing itself and building its backends before it serves, and the
# tests start some 60 (18 adapter and fault tests: 136 -> 85 CPU-s, 83 -> 60 s).
MOTO_ZYGOTE = $(VENV)/bin/python local/moto_zygote.py run --
run_tests = $(MOTO_ZYGOTE) $(if $(NEXTEST),$(CARGO) nextest run --no-fail-fast --test-threads $(TEST_THREADS) $(1),$(CARGO) test --no-fail-fast $(1) -- --test-threads $(TEST_THREADS))

test-unit: setup-python build-all ## Unit tests of every crate
	$(call run_tests,--workspace --lib --bins --test stack --test simulator)

test-e2e: setup-apt setup-python build-all ## End-to-end tests against local stacks started on free ports
	$(call run_tests,--workspace --test e2e)

test-all: setup-apt setup-python build-all ## Unit and end-to-end tests in one run
	$(call run_tests,--workspace)

# `make test` in three steps:
# 1. fmt;
# 2. one build of every target, and beside it the venvs (uv) and npm packages the checks need;
# 3. the tests, and beside them the offline infra checks (single-threaded Python).
# The build lasts as long as its longest chain of crates (aws-lc-sys, the SDK's runtime, then
# aws-sdk-ec2's ~280 s front end on one core): the infra checks beside it slowed that chain down
# (579 s with them and pip, 538 s without); beside the tests they cost ~25 s (372 / 397 s).
# The build lints while it builds: tests/clippy-rustc compiles the workspace's own crates with
# Clippy's lints (warnings are errors), the checks of `make lint` in the one build of every target,
# so the dependencies are not compiled a second time in check mode. Cargo keys the workspace
# crates' artifacts by the wrapper, so the tests' own `cargo nextest` (a no-op build) runs with it
# too; a later plain `cargo build` recompiles those crates (not the dependencies), and `make test`
# after a plain build lints them again.
test: export RUSTC_WORKSPACE_WRAPPER := $(CURDIR)/tests/clippy-rustc
test: setup-apt ## Everything CI runs: fmt, the build that lints, the tests and the infra checks
	@$(MAKE) --no-print-directory -j1 fmt-check
	@$(MAKE) --no-print-directory -j3 --output-sync=target setup-python setup-infra build-all
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-all test-infra
	@echo "make test: all checks passed"

test-infra:
	@$(MAKE) --no-print-directory -j1 check-infra

bench: setup-apt setup-python ## Release sizes, cold start and local create/delete timings
	@local/bench.sh

sam-build: $(STAMPS)/uv ## Build every function for arm64 with sam build (what deploy uploads; no AWS needed)
	infra/build.sh

deploy: $(STAMPS)/uv ## Deploy to AWS with SAM (guided the first time)
	infra/deploy.sh

destroy: $(STAMPS)/uv ## Remove the deployed stack
	infra/destroy.sh

clean: down ## Remove build output, venvs and local state
	rm -rf target $(VENV) $(VENV_INFRA) $(VENV_ST) .venv-bench $(VENV_UV) node_modules .mecplane
