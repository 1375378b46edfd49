# Two commands do all the set-up:
#   make demo   — install everything, then run `rig demo` (no hardware needed)
#   make test   — install everything, then run the whole test suite
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test test-fast setup bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/rig demo --out out/demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/rig bench all --json out/bench.json

clean:
	rm -rf $(VENV) out
