# The two commands of the README: `make demo` and `make test`. Each sets up .venv first if it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# 2 cores: torch with 2 threads under contention collapses (see FACTS in the design notes).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch FIRST, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[dev,semantic]'
	touch $(STAMP)

test: setup
	$(BIN)/ruff check .
	# headless Chromium for tests/integration/test_ui.py (apt, as root; a hint otherwise)
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/slm demo

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .slm .pytest_cache
