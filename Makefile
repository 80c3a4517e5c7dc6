# Two set-up commands (see README):
#   make run    create the environment (.venv, Python 3.12) and run the main job
#   make test   run the test suite (what CI runs)
PYTHON ?= $(shell command -v pyenv >/dev/null 2>&1 && pyenv which python3.12 2>/dev/null || command -v python3.12 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env run test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12), "mlmm needs Python 3.12, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -c 'import torch, openmmtorch; assert torch.__version__.startswith("2.9.1"), torch.__version__'
	touch $(STAMP)

env: $(STAMP)

# The main job: toluene in water, ML/MM with AIMNet2, built, minimized and run for 2 ps with a progress bar.
run: $(STAMP)
	$(BIN)/mlmm run systems/toluene-water.yaml -o runs/toluene-water --model aimnet2 --length 2ps --overwrite

# Tests run in TEST_WORKERS processes (pytest-xdist), each test module whole in one of them so its
# fixtures are built once; most tests use one core, so two workers fill a two-core machine.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/mlmm bench --quick --json bench.json --plot bench.png

clean:
	rm -rf $(VENV) runs
