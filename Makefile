# TpuGraphs runtime ranking: every stage is a target; `make help` lists them.
# Variables: DATASET (names every artifact path), DATA (npz root), SPLIT, MODEL, SUBMISSION,
# ARGS (hydra overrides passed to the stage), JOBS.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATASET ?= sample
DATA_DIR ?= data
DATA ?= $(DATA_DIR)/raw/$(DATASET)
SPLIT ?= test
MODEL ?= ensemble
SUBMISSIONS ?= submissions
SUBMISSION ?= $(SUBMISSIONS)/submission.csv
REPORTS ?= reports
REPORT ?= $(REPORTS)/$(DATASET)/evaluation_$(SPLIT).json
ARGS ?=
# per-stage overrides, also honoured by `make all` (ARGS goes to the one target named):
# e.g. SAMPLE_ARGS="graphs.train=20" PAD_ARGS="fit_fallback=true" GNN_ARGS="experiment=gnn_mha"
SAMPLE_ARGS ?=
PRUNE_ARGS ?=
PAD_ARGS ?=
EXTRACT_ARGS ?=
GBDT_ARGS ?=
GNN_ARGS ?=
ENSEMBLE_ARGS ?=
GNN_BENCH_ARGS ?=
PRED := $(DATA_DIR)/predictions/$(DATASET)
COMMON := paths.dataset=$(DATASET) paths.data_dir=$(DATA_DIR) paths.raw=$(DATA) \
  paths.submissions=$(SUBMISSIONS) paths.reports=$(REPORTS)/$(DATASET)
INSTALLED := $(VENV)/.installed
PRUNED := $(DATA_DIR)/interim/$(DATASET)/pruned/.complete
PADDED := $(DATA_DIR)/interim/$(DATASET)/padded/.complete
EXTRACTED := $(DATA_DIR)/processed/$(DATASET)/.complete

# The embedded sample is generated here; any other DATA is read as it is.
ifeq ($(DATASET),sample)
RAW := $(DATA)/.complete
else
RAW :=
endif

.PHONY: help all venv test sample-data inspect prune pad extract baseline submission validate evaluate download bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo "  variables: DATASET=$(DATASET) DATA=$(DATA) SPLIT=$(SPLIT) MODEL=$(MODEL) SUBMISSION=$(SUBMISSION) ARGS=\"key=value ...\""

all: $(INSTALLED) $(RAW) $(EXTRACTED) ## every stage on DATA (default: the embedded sample) -> ensemble's submissions/submission.csv, valid scores and report
	$(MAKE) --no-print-directory baseline ARGS=
	$(MAKE) --no-print-directory train-gbdt ARGS=
	$(MAKE) --no-print-directory train-gnn ARGS=
	$(MAKE) --no-print-directory ensemble ARGS=
	$(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=valid SUBMISSION=$(SUBMISSIONS)/$(DATASET)_ensemble_valid.csv ARGS=keep_copy=false
	$(MAKE) --no-print-directory evaluate SPLIT=valid SUBMISSION=$(SUBMISSIONS)/$(DATASET)_ensemble_valid.csv ARGS=
	$(MAKE) --no-print-directory report ARGS=
	$(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=test ARGS=

venv: $(INSTALLED) ## create .venv and install the pinned requirements and the project

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: $(INSTALLED) ## run the test suite (includes end-to-end and slow tests)
	$(PY) -m pytest -q

sample-data: $(INSTALLED) ## generate the embedded sample dataset under data/raw/sample
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(ARGS)

$(DATA_DIR)/raw/sample/.complete: | $(INSTALLED)
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(ARGS)

inspect: $(INSTALLED) ## check every file under DATA against the format and summarize it
	$(PY) -m pipeline.inspect $(COMMON) $(ARGS)

prune: $(PRUNED) ## keep configurable nodes and their k-hop neighbourhood -> data/interim/<dataset>/pruned
$(PRUNED): $(INSTALLED) $(RAW) conf/prune.yaml
	$(PY) -m pipeline.prune $(COMMON) $(PRUNE_ARGS) $(ARGS)

pad: $(PADDED) ## unambiguous -1 layout padding, train-fitted normalization -> data/interim/<dataset>/padded
$(PADDED): $(PRUNED) conf/pad.yaml
	$(PY) -m pipeline.pad $(COMMON) $(PAD_ARGS) $(ARGS)

extract: $(EXTRACTED) ## dedup and pack configs; GNN tensors and GBDT tables -> data/processed/<dataset>
$(EXTRACTED): $(PADDED) conf/extract.yaml
	$(PY) -m pipeline.extract $(COMMON) $(EXTRACT_ARGS) $(ARGS)

baseline: $(INSTALLED) $(RAW) ## score valid and test configs with the training-free baseline ranker
	$(PY) -m pipeline.baseline $(COMMON) $(ARGS)

submission: $(INSTALLED) ## write SUBMISSION from MODEL's predictions on SPLIT (validated before writing)
	$(PY) -m pipeline.submission $(COMMON) predictor=$(MODEL) split=$(SPLIT) submission=$(SUBMISSION) $(ARGS)

validate: $(INSTALLED) ## check SUBMISSION against the files of SPLIT under DATA
	$(PY) -m pipeline.validate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(ARGS)

evaluate: $(INSTALLED) ## score SUBMISSION against SPLIT=valid under DATA; writes REPORT
	$(PY) -m pipeline.evaluate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) report=$(REPORT) $(ARGS)

download: $(INSTALLED) ## fetch the real competition data into data/raw/kaggle with the Kaggle CLI
	$(PY) -m pipeline.download $(COMMON) $(ARGS)

bench: $(INSTALLED) ## benchmarks on a generated full-size layout graph: prune/pad/extract, then GNN train/infer configs/s (JSON lines)
	$(PY) -m pipeline.bench $(ARGS)
	$(PY) -m pipeline.bench_gnn $(GNN_BENCH_ARGS)

clean: ## remove generated artifacts of DATASET (keeps .venv and raw data)
	rm -rf $(DATA_DIR)/interim/$(DATASET) $(DATA_DIR)/processed/$(DATASET) $(DATA_DIR)/models/$(DATASET) $(PRED) $(REPORTS)/$(DATASET) logs

# --- validation report and Kaggle packaging ---------------------------------------------------
.PHONY: report kaggle kaggle-push
VALIDATION := $(REPORTS)/$(DATASET)/validation.json
KAGGLE_OUT ?= build/kaggle
KAGGLE_BUNDLE := $(KAGGLE_OUT)/.complete

report: $(VALIDATION) ## validation report of every model's valid predictions -> reports/<dataset>/validation.{md,json} + PNG plots
$(VALIDATION): $(INSTALLED) conf/report.yaml $(wildcard $(PRED)/*/valid.parquet)
	$(PY) -m pipeline.report $(COMMON) $(ARGS)

kaggle: $(KAGGLE_BUNDLE) ## Kaggle bundles: dataset (code, trained artifacts, wheels) and notebook -> build/kaggle
$(KAGGLE_BUNDLE): $(INSTALLED) conf/kaggle.yaml notebooks/kaggle_submission.py $(wildcard pipeline/*.py features/*.py models/*.py conf/*.yaml conf/*/*.yaml) \
    $(shell find $(DATA_DIR)/models/$(DATASET) $(DATA_DIR)/interim/$(DATASET)/padded/stats.json -type f 2>/dev/null)
	$(PY) -m pipeline.kaggle $(COMMON) out=$(KAGGLE_OUT) $(ARGS)

kaggle-push: $(INSTALLED) ## rebuild the Kaggle bundles and upload them (ARGS="owner=<kaggle user>"; says what to set without CLI or credentials)
	$(PY) -m pipeline.kaggle $(COMMON) mode=push out=$(KAGGLE_OUT) $(ARGS)

# --- LightGBM rankers and the per-collection ensemble ---
GBDT_DONE := $(DATA_DIR)/models/$(DATASET)/gbdt/.complete
ENSEMBLE_DONE := $(DATA_DIR)/models/$(DATASET)/ensemble/.complete
.PHONY: train-gbdt ensemble

train-gbdt: $(GBDT_DONE) ## LightGBM lambdarank per collection -> data/models/<dataset>/gbdt, predictions gbdt/{valid,test}
$(GBDT_DONE): $(EXTRACTED) conf/train_gbdt.yaml
	$(PY) -m pipeline.train_gbdt $(COMMON) $(GBDT_ARGS) $(ARGS)

ensemble: $(ENSEMBLE_DONE) ## blend baseline/gbdt/gnn per collection with weights fitted on valid -> predictions ensemble/{valid,test}
$(ENSEMBLE_DONE): $(GBDT_DONE) conf/ensemble.yaml \
    $(filter-out $(PRED)/ensemble/%,$(wildcard $(PRED)/*/valid.parquet))
	$(PY) -m pipeline.ensemble $(COMMON) $(ENSEMBLE_ARGS) $(ARGS)

# ---- GNN ranker (pipeline.train_gnn; models/gnn.py) ----
GNN_STAMP := $(DATA_DIR)/models/$(DATASET)/gnn/.complete
FILE ?= ../shared/tpugraphs-samples/layout/xla/default/train/unet3d.npz
.PHONY: train-gnn bench-gnn transductive

train-gnn: $(GNN_STAMP) ## train the cross-config-attention GNN per collection; predictions for valid and test
$(GNN_STAMP): $(EXTRACTED) conf/train_gnn.yaml conf/model/gnn.yaml
	$(PY) -m pipeline.train_gnn $(COMMON) $(GNN_ARGS) $(ARGS)

bench-gnn: $(INSTALLED) ## only the GNN training and inference throughput (configs/s) on a generated full-size layout graph (JSON lines)
	$(PY) -m pipeline.bench_gnn $(ARGS)

transductive: $(INSTALLED) ## 50/50 split of one real layout file's configs (FILE=<npz>): GNN vs LightGBM Kendall tau
	$(PY) -m pipeline.transductive $(COMMON) file=$(FILE) $(ARGS)
