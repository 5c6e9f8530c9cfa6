# vilt_lab: every target a researcher needs. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.DEFAULT_GOAL := help
.PHONY: help install test lint params

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

install: ## install vilt_lab with its dev extras into $(PYTHON) (idempotent)
	$(PIP) install -q -e '.[dev]'

test: install ## install what is needed, then run the whole test suite
	$(PYTHON) -m pytest -q

lint: install ## ruff over the sources and tests
	$(PYTHON) -m ruff check src tests
	$(PYTHON) -m ruff format --check src tests

params: install ## print ViLT-B/32's parameter counts in the paper's Table 6 accounting
	$(PYTHON) -m vilt_lab.model.param_count base32
