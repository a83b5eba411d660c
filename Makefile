# Two commands from a fresh clone:  `make demo` (the embedded default) and `make test` (everything).
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := src tests benchmarks examples

.PHONY: install lint format test demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (see DEVELOPERS.md): any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: install
	$(VENV)/bin/ruff check --fix $(SOURCES)
	$(VENV)/bin/ruff format $(SOURCES)

test: lint
	$(PY) -m pytest -n 2 --dist loadfile -q

demo: install
	$(VENV)/bin/maskformer demo

bench: install
	$(PY) benchmarks/compare.py
	$(PY) benchmarks/processing.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
