# make run   - install everything (once), then run the quickstart pipeline
# make test  - install everything (once), then run the test suite
# make setup - idempotent install: the Debian packages it needs, .venv, the project at the
#              versions pinned in constraints.txt
# make constraints - pin what .venv holds now (after an upgrade) in constraints.txt
# make docs  - build the documentation site into site/ (mkdocs build --strict)

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A bare Debian machine: a C/C++ compiler, and pkg-config, OpenCV and libjpeg-turbo, which
# FFCV 1.0.2 compiles against; python3-dev (Python.h) and python3-venv (ensurepip) when
# $(PYTHON) is Debian's own (/usr/bin), which lacks them on a bare machine. chromium: the
# documentation site's browser test (tests/test_docs_site.py) opens every page in it.
APT_PACKAGES := build-essential pkg-config libopencv-dev libturbojpeg0-dev chromium
STAMP := $(VENV)/.installed
# The versions CI resolved (pip freeze), so that two installs a month apart get the same stack.
CONSTRAINTS := constraints.txt

.PHONY: setup system-packages constraints run test test-fast lint format docs clean

setup: $(STAMP)

# Installs only what is missing, and only where apt-get exists (elsewhere: a note). Not root:
# through sudo when there is one, else it stops and prints the command to run as root.
system-packages:
	@command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 || { \
		echo "note: no apt-get here; FFCV needs a C++ compiler, pkg-config, OpenCV and libjpeg-turbo headers"; \
		exit 0; }; \
	missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	case "$$(readlink -f "$$(command -v $(PYTHON))")" in /usr/bin/*) \
		for p in python3-dev python3-venv; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done;; \
	esac; \
	[ -z "$$missing" ] && exit 0; \
	command="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing"; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else \
		echo "error: missing Debian packages:$$missing; as root, run:" >&2; \
		echo "  $$command" >&2; \
		echo "then run make setup again" >&2; \
		exit 1; \
	fi; \
	echo "installing Debian packages:$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@$(MAKE) --no-print-directory system-packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	@# The distribution was called datapruning before it became datapruning-tta: drop the old
	@# editable install, whose finder would map the top-level names models and flows.
	$(PY) -m pip uninstall -q -y datapruning 2>/dev/null || true
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

# To move the pins: .venv/bin/python -m pip install -U -e ".[dev]" (no -c), run the tests,
# then make constraints. Written to a temporary name and renamed, as every file here.
constraints:
	test -x $(PY) || { echo "error: no $(VENV); run make setup first" >&2; exit 1; }
	$(PY) -m pip check
	{ echo "# The versions CI resolved for datapruning-tta[dev] (make constraints; make setup"; \
	  echo "# installs with pip install -c $(CONSTRAINTS)). Python $$($(PY) -c 'import platform; print(platform.python_version())')."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(datapruning-tta|datapruning)=='; \
	} > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

run: setup
	$(VENV)/bin/datapruning run configs/quickstart.yaml

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# lint-imports: the import layers and no-circle contracts in pyproject.toml ([tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The site: guides and results from docs/, reference pages generated from the code at build
# time (docs/_hooks). --strict: a broken link, a missing page or an unresolved reference fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs site
