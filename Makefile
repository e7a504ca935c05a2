# Two commands do everything on a fresh machine: `make bench` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bench test test-fast lint benchmarks clean-target

# requirements.lock pins the whole client stack, so two machines measure with the same one.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

# The agent heartbeat storm, smoke profile, against the embedded stand-in.
bench: $(STAMP)
	$(BIN)/workbench target up
	$(BIN)/workbench run agent_storm --profile smoke

# The suite is bound by wall time (processes starting, real-time runs), not CPU: parallel
# workers (pytest-xdist), each with its own embedded target. TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal
	$(BIN)/workbench baseline render --check
	$(BIN)/workbench notebooks render --check

# The inner loop: everything but the tests marked slow (tests/conftest.py), in a minute or two.
test-fast: $(STAMP)
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean-target: $(STAMP)
	$(BIN)/workbench target down
