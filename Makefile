# Two entry points, each sets itself up on a fresh machine:
#   make demo   -- the main job on the bundled default
#   make test   -- lint, the test suite, and the built package checked in a fresh venv
# TORCH picks the torch build: the default is a CPU build where one is available locally;
# elsewhere e.g. `make test PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PIP_ARGS ?=
EXTRAS ?= test,plot,progress,hf,onnx,openvino
PKG := build/package-check

.PHONY: demo test lint pytest package-check bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install -q $(PIP_ARGS) -e ".[$(EXTRAS)]" build
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/sta demo --out demo_out

test: lint pytest package-check

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sta tests benchmarks

# The README's commands (tests/test_readme.py) run once, in package-check, against the installed wheel.
pytest: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --deselect tests/test_readme.py::test_readme_commands_run_as_written

# Build the sdist and wheel, install the wheel in a fresh venv, run the CLI from an unrelated folder,
# then run the sdist's packaging tests against the installed wheel (the sdist's sta/ is removed first):
# the layer rules read the installed package, and the README's commands run as a pip user runs them.
# (The whole suite ran against the source tree in `pytest`.)
package-check: $(VENV)/.installed
	rm -rf dist $(PKG) && mkdir -p $(PKG)/elsewhere
	$(PY) -m build -q --outdir dist . > $(PKG)/build.log
	python3 -m venv $(PKG)/venv
	$(PKG)/venv/bin/pip install -q $(PIP_ARGS) "$(TORCH)"
	$(PKG)/venv/bin/pip install -q $(PIP_ARGS) "$$(ls dist/*.whl)[$(EXTRAS)]"
	cd $(PKG)/elsewhere && ../venv/bin/sta --version && ../venv/bin/sta flops --model vit_small_patch16_224 --r 0 64 \
		&& ../venv/bin/sta demo --clips 24 --r 32 --method sta random --no-progress --out demo
	tar xzf dist/*.tar.gz -C $(PKG) && rm -rf $(PKG)/sta_prune-*/sta
	cd $(PKG)/sta_prune-* && ../venv/bin/python -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_readme.py

bench: $(VENV)/.installed
	$(PY) benchmarks/cpu_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build dist
