# The two commands of the README, plus the integration tests that need real services.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_DIR := examples/visual_inspection

.PHONY: demo test test-integration install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==24.2"

$(STAMP): $(BIN)/python setup.py constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python $(DEMO_DIR)/generate.py --out $(DEMO_DIR)/data
	$(BIN)/python $(DEMO_DIR)/demo.py

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/integration

clean:
	rm -rf out $(DEMO_DIR)/data $(DEMO_DIR)/out .pytest_cache

test-integration: $(TEST_STAMP)
	bash scripts/integration.sh
