# Everything a user runs. `make setup` builds .venv from the package registries; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (small, and on this project's CI machine it installs from local disk).
# GPU users: make setup TORCH="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# Third-party assets (Surrey Face Model, sample clips) come from a local mirror when one sits beside the
# checkout (as on CI), else they are downloaded into the user cache; see cest/assets.py.
export CEST_ASSETS_MIRROR ?= $(if $(wildcard ../shared/assets/SHA256SUMS),$(abspath ../shared/assets))

INPUT ?= ../shared/assets/voxceleb_sample
OUTPUT ?= data/clips
# Extra options for `make preprocess`, e.g. PREPROCESS_ARGS="--num-cpus 4 --max-frames 300"
PREPROCESS_ARGS ?=

# `make eval`: the children of the latest ablation run (MLflow tag cest.role=ablations) on AFLW2000-3D (the
# asset sample unless AFLW2000 names the full 2,000-image folder) and, when `make preprocess` has run, the
# photometric error on its clips. Results in EVAL_OUTPUT and in each run; see docs/eval.md.
AFLW2000 ?= $(CEST_ASSETS_MIRROR)/aflw2000_sample
EVAL_OUTPUT ?= eval
EVAL_ARGS ?=

.PHONY: setup test demo preprocess eval bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) -m cest.demo --output demo/face.png

preprocess: setup
	$(PY) -m pipelines.preprocess --input $(INPUT) --output $(OUTPUT) $(PREPROCESS_ARGS)

eval: setup
	$(PY) -m jobs.eval --latest-ablations --aflw2000 $(AFLW2000) $(if $(wildcard $(OUTPUT)/clips),--clips $(OUTPUT)) --output $(EVAL_OUTPUT) $(EVAL_ARGS)

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_render.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(VENV) .pytest_cache demo $(EVAL_OUTPUT)
