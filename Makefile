# PackForcing evaluation and ablation harness. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SWEEP ?=
SCALE ?= toy
LAUNCHER ?= local
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-all lint ablate report reports-toy gate gate-update wandb-report bench budget vbench-env wandb-sync slurm-up slurm-down train-toy clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.ok: requirements.txt constraints.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.ok ## create .venv with the pinned torch==2.14.1 + torchvision==0.29.1 (one requirements + constraints resolve)

test: setup ## run the test suite (CPU; GPU tests skip), as CI does
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not gpu"

test-all: setup ## run every test, GPU ones included (on a GPU machine)
	$(PY) -m pytest -q

lint: setup ## ruff
	$(PY) -m ruff check packforcing harness sweeps reports tests

ablate: setup ## run a sweep: make ablate SWEEP=sink_size [SCALE=toy|wan] [LAUNCHER=local|debug|slurm] [ARGS="key=value ..."]; no SWEEP: list them
ifeq ($(strip $(SWEEP)),)
	@$(PY) -m harness ls --scale $(SCALE)
	@echo "run one with: make ablate SWEEP=<sweep> [SCALE=toy|wan] [ARGS=\"key=value ...\"]"
else
	$(PY) -m harness ablate --sweep "$(SWEEP)" --scale $(SCALE) --launcher $(LAUNCHER) $(ARGS)
endif

report: setup ## build the HTML report and tables from results/ (reports/site/index.html)
	$(PY) -m reports.build --root results

reports-toy: setup ## regenerate the committed toy report output (reports/toy/) from results/ (the baseline's numbers are not touched)
	$(PY) -m reports.findings --root results --out reports/toy
	$(PY) -m reports.build --root results --out reports/toy/report

gate: setup ## regression gate: run the smallest toy sweeps, compare with reports/baseline/
	$(PY) -m harness.gate

gate-update: setup ## rewrite reports/baseline/ on purpose
	$(PY) -m harness.gate --update

bench: setup ## Wan-scale speed and memory benchmark (GPU only) -> reports/perf/
	$(PY) -m packforcing.bench $(ARGS)

budget: setup ## KV budget of every policy: make budget ARGS="--preset wan2.1-1.3b --seconds 120"
	$(PY) -m packforcing.budget $(ARGS)

vbench-env: ## create .venv-vbench (VBench pins old libraries; kept apart from the project)
	bash scripts/make_vbench_env.sh

wandb-sync: setup ## upload offline wandb runs kept under results/ (ARGS="--rebuild" re-creates cells, summary runs, report layouts first)
	$(PY) -m harness.wandb_sync $(ARGS)

wandb-report: setup ## lay out a sweep's wandb report: make wandb-report SWEEP=sink_size [ARGS="--entity ME --save"] (--save needs a server)
	$(PY) -m harness.wandb_report --sweep "$(SWEEP)" $(ARGS)

slurm-up: ## start a single-node Slurm with accounting on localhost (tests, demos)
	bash scripts/slurm_up.sh

slurm-down: ## stop it
	bash scripts/slurm_down.sh

train-toy: setup ## train the toy models (GPU recommended): make train-toy ARGS="--stage all"
	$(PY) -m packforcing.train $(ARGS)

clean: ## remove caches (keeps results/ and .venv)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
