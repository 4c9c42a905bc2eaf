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

.PHONY: venv lab test release grade clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	    { echo "Python >= 3.10 is needed (found $$($(PYTHON) --version)); set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

lab: venv
	$(BIN)/jupyter lab --ServerApp.root_dir=course $(ROOT_FLAG) $(LAB_ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

release: venv
	$(BIN)/dvl release

# make grade SUBMITTED=path/to/submitted [OUT=grading]
SUBMITTED ?= submitted
OUT ?= grading
grade: venv
	$(BIN)/dvl grade $(SUBMITTED) --out $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache grading test-artifacts
