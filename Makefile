# vm-agent: make run (agent on this machine), make test (every test layer).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
RUNDIR  := $(CURDIR)/.run
SOCKET  ?= $(RUNDIR)/agent.sock
PREFIX  ?= /opt/vm-agent

.PHONY: venv run test unit protocol integration e2e lint deps install bench bench-report clean help

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp  ## create .venv with the agent and its dev tools

run: venv  ## run the agent on this machine's /proc and Docker; socket .run/agent.sock
	mkdir -p $(RUNDIR)/state $(RUNDIR)/conf.d
	cp etc/vm-agent.yaml $(RUNDIR)/vm-agent.yaml
	@# a dev run writes nothing outside .run/ (the shipped file exports to node_exporter's folder)
	printf 'metrics:\n  textfile: %s/vm-agent.prom\n' '$(RUNDIR)' > $(RUNDIR)/conf.d/10-make-run.yaml
	@echo "query it:  curl --unix-socket $(SOCKET) http://localhost/v1/health"
	@echo "      or:  $(BIN)/vm-agentctl --socket $(SOCKET) health"
	$(BIN)/vm-agent serve --config $(RUNDIR)/vm-agent.yaml --socket $(SOCKET) \
	  --state-dir $(RUNDIR)/state --run-dir $(RUNDIR)

deps:  ## install the system packages the tests need (Debian; needs root)
	scripts/install-test-deps.sh

lint: venv  ## ruff, mypy --strict, unit file checks
	$(BIN)/ruff check agent tests bench
	$(BIN)/mypy agent
	scripts/check-units.sh

test: deps venv lint  ## every test layer, e2e last; a skipped test fails the run
	VMAGENT_STRICT=1 $(BIN)/pytest -m "not e2e"
	$(MAKE) e2e

unit: venv
	$(BIN)/pytest tests/unit

protocol: venv
	$(BIN)/pytest tests/protocol

integration: deps venv
	VMAGENT_STRICT=1 $(BIN)/pytest tests/integration

e2e: deps venv  ## systemd as PID 1 in a debootstrap'd bookworm container; make install inside (root)
	VMAGENT_STRICT=1 $(BIN)/pytest -m e2e tests/e2e

install:  ## install the agent, units and config on this host (root)
	scripts/install.sh $(PREFIX)

bench: venv  ## speed and memory figures against a baseline; issue 3's container timings
	$(BIN)/python bench/health.py; a=$$?; $(BIN)/python bench/containers.py; b=$$?; exit $$(( a > b ? a : b ))

bench-report: venv  ## issue 7's performance report: one run, table + JSON (.run/bench-report.json)
	mkdir -p $(RUNDIR)
	$(BIN)/python bench/vmreport.py --json $(RUNDIR)/bench-report.json

clean:
	rm -rf $(RUNDIR) .pytest_cache .mypy_cache .ruff_cache
