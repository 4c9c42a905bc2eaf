# Two commands a person needs: `make lab` (learners) and `make test` (instructors, CI).
# Everything installs into .venv from pyproject.toml; torch is pinned there.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Lab options: the tests start the server headless with e.g. LAB_ARGS="--no-browser --port=8899".
LAB_ARGS ?=
# Jupyter refuses to run as root (containers, CI) unless told.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
# pytest options: CI and `make test` run the whole suite in parallel.
PYTEST_ARGS ?= -n auto

export JUPYTER_PLATFORM_DIRS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MPLBACKEND := Agg

.PHONY: venv lab test release grade clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	    { echo "Python >= 3.10 is needed (found $$($(PYTHON) --version)); set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

lab: venv
	$(BIN)/jupyter lab --ServerApp.root_dir=course $(ROOT_FLAG) $(LAB_ARGS)

test: venv browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser test drives Debian's chromium through Playwright (which never downloads a
# browser here). Installed when missing and we are root or may sudo; otherwise that test skips.
CHROMIUM ?= /usr/bin/chromium
export DVL_CHROMIUM := $(CHROMIUM)
APT_CHROMIUM := env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq chromium'
browser:
	@test -x $(CHROMIUM) || { \
	    if [ "$$(id -u)" = 0 ]; then $(APT_CHROMIUM); \
	    elif sudo -n true 2>/dev/null; then sudo $(APT_CHROMIUM); \
	    else false; fi || echo "chromium could not be installed (root or sudo and Debian's packages needed): the browser test will skip"; }

release: venv
	$(BIN)/dvl release

# make grade SUBMITTED=path/to/submitted [OUT=grading]
SUBMITTED ?= submitted
OUT ?= grading
grade: venv
	$(BIN)/dvl grade $(SUBMITTED) --out $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache grading test-artifacts
