# Two commands from a fresh clone:  `make demo` (the embedded default) and `make test` (everything).
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := src tests benchmarks examples

.PHONY: install lint format test test-timm demo bench clean

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

# The timm backbone tests against real timm, in a venv of their own: timm needs torchvision, whose
# PyPI build only imports beside torch 2.14.1 here (a CUDA build of several GB), not beside the
# CPU torch 2.13.0 of .venv. .ci/run calls this after `make test`.
TIMM_VENV ?= .venv-timm
$(TIMM_VENV)/.installed: pyproject.toml
	python3 -m venv $(TIMM_VENV)
	$(TIMM_VENV)/bin/python -m pip install -q --upgrade pip
	$(TIMM_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 "timm>=1.0" "pytest>=7.4"
	$(TIMM_VENV)/bin/python -m pip install -q -e .
	touch $@

test-timm: $(TIMM_VENV)/.installed
	MASKFORMER_REQUIRE_TIMM=1 $(TIMM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_timm_backbone.py

demo: install
	$(VENV)/bin/maskformer demo

bench: install
	$(PY) benchmarks/compare.py
	$(PY) benchmarks/processing.py

clean:
	rm -rf $(VENV) $(TIMM_VENV) build dist src/*.egg-info .pytest_cache
