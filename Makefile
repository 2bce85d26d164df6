# make stages: every stage deployed and proved on the local target, then the report.
# make test:   lint, types, the project's own tests and the stage packages (what CI runs).
# Each installs what is missing first (tools/setup.sh).

PY      := .venv/bin/python
PYTEST  := tools/pytest-gate
RESULTS := reports/allure-results
JUNIT   := reports/junit
WORKERS ?= 2
STAGE_MARKS := not soak and not chaos
LINTED  := $(wildcard harness services stages tests benchmarks)

.PHONY: setup lint format test unit stages report clean

setup:
	@tools/setup.sh

lint: setup
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format $(LINTED)
	$(PY) -m ruff check --fix $(LINTED)

unit: setup
	$(PYTEST) tests -n $(WORKERS) --junitxml=$(JUNIT)/tests.xml --alluredir=$(RESULTS)

stages: setup
	$(PYTEST) stages -n $(WORKERS) -m "$(STAGE_MARKS)" --junitxml=$(JUNIT)/stages.xml \
		--alluredir=$(RESULTS) ; status=$$? ; $(MAKE) --no-print-directory report ; exit $$status

test: lint
	@rm -rf $(RESULTS) $(JUNIT)
	$(PYTEST) tests -n $(WORKERS) --junitxml=$(JUNIT)/tests.xml --alluredir=$(RESULTS)
	$(PYTEST) stages -n $(WORKERS) -m "$(STAGE_MARKS)" --junitxml=$(JUNIT)/stages.xml \
		--alluredir=$(RESULTS)

report: setup
	@$(PY) -m harness.report_env $(RESULTS)
	node_modules/.bin/allure generate $(RESULTS) -o reports/allure-report --clean >/dev/null
	@echo "report: reports/allure-report/index.html"

clean:
	rm -rf reports .pytest_cache .mypy_cache .ruff_cache
