# esad-notebooks -- the README's commands.
#   make demo   install into .venv (first time) and run the main job on the synthetic benchmark:
#               ESAD, RIAD at the same budget, the PatchCore-style reference and the naive baseline
#   make test   install into .venv (first time) and run the test suite
#   make lab    open the notebooks in JupyterLab
#   make bench  side-by-side speed benchmark
#   make notebooks  execute every notebook in the demo profile and commit-ready (outputs + stamp)
#   make figures    redraw the README's figure (docs/esad_overview.png)
#   make clean  remove the venv, the generated synthetic benchmark and cached models
#               (never a dataset you downloaded or a split you made)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= demo

.PHONY: demo test lab bench clean install lint notebooks figures

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/esad demo --profile $(PROFILE) --with-riad --with-patchcore

test: $(STAMP)
	$(BIN)/ruff check esad_lib tests benchmarks tools notebooks docs
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check esad_lib tests benchmarks tools notebooks docs

lab: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab

notebooks: $(STAMP)
	$(BIN)/python -m tools.lessons

figures: $(STAMP)
	$(BIN)/python docs/make_figures.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]" || echo "onnxruntime not installable here: the ONNX row is skipped"
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) bench .pytest_cache .ruff_cache
	rm -rf data/synthetic data/cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
