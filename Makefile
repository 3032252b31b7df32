# The two commands a user needs: `make demo` and `make test`. Each creates .venv when missing
# and installs fes_jax with its pinned dependencies; nothing else is ever needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fes_jax-installed
WORKDIR ?= workdir/demo
PYTEST_ARGS ?=

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on the embedded synthetic default (configs/spotformer_synthetic.py), reduced
# to fit a 2-core CPU (see the config's docstring).
DEMO_ARGS ?= demo
demo: $(STAMP)
	$(BIN)/python -m fes_jax.main --config=configs/spotformer_synthetic.py:$(DEMO_ARGS) \
	    --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean-demo:
	rm -rf $(WORKDIR)
