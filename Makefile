# Two entry points, each sets itself up on a fresh machine:
#   make demo   -- the main job on the bundled default
#   make test   -- the test suite
# TORCH picks the torch build: the default is a CPU build where one is available locally;
# elsewhere e.g. `make test PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PIP_ARGS ?=
EXTRAS ?= test,plot,progress,hf

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install -q $(PIP_ARGS) -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/sta demo --out demo_out

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/cpu_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
