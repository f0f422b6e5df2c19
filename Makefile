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

# Videos for `make preprocess`; empty: the sample clips, fetched through the asset registry (mirror or download).
INPUT ?=
OUTPUT ?= data/clips
# Extra options for `make preprocess`, e.g. PREPROCESS_ARGS="--num-cpus 4 --max-frames 300"
PREPROCESS_ARGS ?=
# Training: `make train` / `make ablations` on the clips of `make preprocess` (see jobs/train.py --help).
DATA ?= $(OUTPUT)
TRAIN_CONFIG ?= jobs/configs/cpu_demo.yaml
NAME ?= demo
TRAIN_ARGS ?=
ABLATION_ARGS ?=
MLFLOW_PORT ?= 5000

# `make eval`: the children of the latest ablation run (MLflow tag cest.role=ablations) on AFLW2000-3D (the
# asset sample, through the registry, unless AFLW2000 names the full 2,000-image folder) and, when
# `make preprocess` has run, the photometric error on its clips. Results in EVAL_OUTPUT and in each run.
AFLW2000 ?=
# Shape benchmarks (docs/eval.md; the user's licence-gated copies): MICC=/data/florence NOW=/data/NoW REALY=images
MICC ?=
NOW ?=
REALY ?=
EVAL_OUTPUT ?= eval
EVAL_ARGS ?=

.PHONY: setup test demo preprocess train ablations mlflow-ui eval bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest

# From the sample videos to trained CEST and IEST models, their evaluation and a textured mesh (jobs/demo.py).
demo: setup
	$(PY) -m jobs.demo --output demo

preprocess: setup
	@input="$(INPUT)"; [ -n "$$input" ] || input=$$($(PY) -m cest.assets dir voxceleb_sample) || exit 1; \
	echo "$(PY) -m pipelines.preprocess --input $$input --output $(OUTPUT) $(PREPROCESS_ARGS)"; \
	$(PY) -m pipelines.preprocess --input "$$input" --output $(OUTPUT) $(PREPROCESS_ARGS)

train: setup
	$(PY) jobs/train.py --data $(DATA) --config $(TRAIN_CONFIG) --name $(NAME) $(TRAIN_ARGS)

ablations: setup
	$(PY) jobs/ablations.py --data $(DATA) --config $(TRAIN_CONFIG) $(ABLATION_ARGS)

# The MLflow UI on this machine only, over the project's SQLite store (or MLFLOW_TRACKING_URI's).
mlflow-ui: setup
	@echo "open: $$($(PY) -m jobs.tracking url --port $(MLFLOW_PORT))"
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow.db)} --host 127.0.0.1 --port $(MLFLOW_PORT)

eval: setup
	@aflw="$(AFLW2000)"; [ -n "$$aflw" ] || aflw=$$($(PY) -m cest.assets dir aflw2000_sample) || exit 1; \
	$(PY) -m jobs.eval --latest-ablations --aflw2000 "$$aflw" $(if $(wildcard $(OUTPUT)/clips),--clips $(OUTPUT)) --output $(EVAL_OUTPUT) \
		$(if $(MICC),--micc $(MICC) --micc-rendered $(MICC)) $(if $(NOW),--now $(NOW)) $(if $(REALY),--realy $(REALY)) $(EVAL_ARGS)

bench: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_render.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(VENV) .pytest_cache demo $(EVAL_OUTPUT)
