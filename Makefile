# make run   - install everything (once), then run the quickstart pipeline
# make test  - install everything (once), then run the test suite
# make setup - idempotent install: Debian packages FFCV needs, .venv, the project

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# FFCV 1.0.2 compiles against OpenCV and libjpeg-turbo found through pkg-config.
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@# The distribution was called datapruning before it became datapruning-tta: drop the old
	@# editable install, whose finder would map the top-level names models and flows.
	$(PY) -m pip uninstall -q -y datapruning 2>/dev/null || true
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/datapruning run configs/quickstart.yaml

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
