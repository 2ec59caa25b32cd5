# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.slimcnn-installed

.PHONY: install demo test test-slow lint readme clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the package metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/slimcnn demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests benchmarks

# README.md is assembled from the per-room sections in docs/readme/ (edit those, then run this).
README_PARTS := 00-intro runs compress models measure tasks_classification sr detection prune latency_aware chip kernel search scale report \
                sr_liu2018 graph_vs_tp quantize export lowrank 99-dev
readme:
	for f in $(README_PARTS); do cat docs/readme/$$f.md; echo; done > README.md

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
