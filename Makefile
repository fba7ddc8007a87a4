# TpuGraphs runtime ranking: every stage is a target; `make help` lists them.
# Variables: DATASET (names every artifact path), DATA (npz root), SPLIT, MODEL, SUBMISSION,
# ARGS (hydra overrides passed to the stage), JOBS.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
SAMPLE_ROOT := $(DATA_DIR)/raw/sample

# The dataset name keys every artifact path. Rule: DATASET=<name> if given; else the embedded
# sample's root (the default DATA) is `sample`; any other DATA=<root> is named after its folder,
# lower-cased, characters other than a-z 0-9 . _ - made `-` (an `npz` or `npz_all` folder is
# named after its parent), and a folder called `sample` becomes `sample-ext`, so no other root
# ever writes over the sample's artifacts. DATASET=<name> alone reads data/raw/<name>.
dataset_of = $(shell r=$$(realpath -m '$(1)'); s=$$(realpath -m '$(SAMPLE_ROOT)'); \
  if [ "$$r" = "$$s" ]; then echo sample; exit 0; fi; n=$$(basename "$$r"); \
  while [ "$$n" = npz -o "$$n" = npz_all ] && [ "$$r" != / ]; do r=$$(dirname "$$r"); n=$$(basename "$$r"); done; \
  n=$$(printf '%s' "$$n" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9._-' '-'); \
  case "$$n" in (""|.|..|-) n=data;; (sample) n=sample-ext;; esac; echo "$$n")
ifeq ($(origin DATA),undefined)
  ifeq ($(origin DATASET),undefined)
    DATASET := sample
  endif
  DATA := $(DATA_DIR)/raw/$(DATASET)
else ifeq ($(origin DATASET),undefined)
  DATASET := $(call dataset_of,$(DATA))
endif
IS_SAMPLE := $(shell [ "$$(realpath -m '$(DATA)')" = "$$(realpath -m '$(SAMPLE_ROOT)')" ] && echo yes)
ifeq ($(DATASET)$(IS_SAMPLE),sample)
  $(error DATASET=sample names the embedded sample's artifacts; DATA=$(DATA) is another root: give it another DATASET name)
endif

SPLIT ?= test
MODEL ?= ensemble
SUBMISSIONS ?= submissions
ifeq ($(DATASET),sample)
SUBMISSION ?= $(SUBMISSIONS)/submission.csv
else
SUBMISSION ?= $(SUBMISSIONS)/$(DATASET)/submission.csv
endif
VALID_SUBMISSION := $(SUBMISSIONS)/$(DATASET)_ensemble_valid.csv
REPORTS ?= reports
REPORT ?= $(REPORTS)/$(DATASET)/evaluation_$(SPLIT).json
ARGS ?=
# ARGS reaches only the target named on the command line, never a stage run as a prerequisite
goal_args = $(if $(filter $(1),$(MAKECMDGOALS)),$(ARGS))
KEEP_COPY ?= true
# per-stage overrides, also honoured by `make all` (ARGS goes to the one target named):
# e.g. SAMPLE_ARGS="graphs.train=20" PAD_ARGS="fit_fallback=true" GNN_ARGS="experiment=gnn_mha"
SAMPLE_ARGS ?=
PRUNE_ARGS ?=
PAD_ARGS ?=
EXTRACT_ARGS ?=
BASELINE_ARGS ?=
GBDT_ARGS ?=
ANALYTICAL_ARGS ?=
GNN_ARGS ?=
ENSEMBLE_ARGS ?=
GNN_BENCH_ARGS ?=
# a GNN experiment (conf/experiment/<name>.yaml), e.g. EXPERIMENT=full_gpu: the full data on one GPU
EXPERIMENT ?=
# folds and a final fit for every trainer (conf/common.yaml: folds, final, fold_splits):
# FOLDS=5 [FINAL=true] [FOLD_SPLITS=[train]]
FOLDS ?=
FINAL ?=
FOLD_SPLITS ?=
FOLD_ARGS := $(strip $(if $(FOLDS),folds=$(FOLDS)) $(if $(FINAL),final=$(FINAL)) $(if $(FOLD_SPLITS),fold_splits=$(FOLD_SPLITS)))
PRED := $(DATA_DIR)/predictions/$(DATASET)
COMMON := paths.dataset=$(DATASET) paths.data_dir=$(DATA_DIR) paths.raw=$(DATA) \
  paths.submissions=$(SUBMISSIONS) paths.reports=$(REPORTS)/$(DATASET)
INSTALLED := $(VENV)/.installed
PRUNED := $(DATA_DIR)/interim/$(DATASET)/pruned/.complete
PADDED := $(DATA_DIR)/interim/$(DATASET)/padded/.complete
EXTRACTED := $(DATA_DIR)/processed/$(DATASET)/.complete
BASELINE_DONE := $(PRED)/baseline/.complete
GBDT_DONE := $(DATA_DIR)/models/$(DATASET)/gbdt/.complete
ANALYTICAL_DONE := $(DATA_DIR)/models/$(DATASET)/analytical/.complete
GNN_STAMP := $(DATA_DIR)/models/$(DATASET)/gnn/.complete
ENSEMBLE_DONE := $(DATA_DIR)/models/$(DATASET)/ensemble/.complete
VALIDATION := $(REPORTS)/$(DATASET)/validation.json
# what each stage was last run with: a stage reruns when its arguments change (STATE/<stage>.args)
STATE := $(DATA_DIR)/interim/$(DATASET)/.make

# Raw inputs of prune. The embedded sample is generated here (its stamp stands for its files);
# any other root is read as it is: each .npz is a prerequisite (a new or changed file reruns
# prune), and the listing file changes when a file is added or removed.
ifeq ($(IS_SAMPLE),yes)
RAW := $(DATA)/.complete
else
RAW_NPZ := $(shell find -L '$(DATA)' -name '*.npz' -type f 2>/dev/null | LC_ALL=C sort)
RAW := $(RAW_NPZ) $(STATE)/raw-files.txt
endif

.PHONY: FORCE
FORCE:

# $(call args_file,<file>,<arguments>): <file> holds <arguments>, rewritten only when they change
define args_file
$(1): FORCE
	$$(shell mkdir -p $$(@D))$$(file >$$@.tmp,$(2))
	@if cmp -s $$@.tmp $$@; then rm -f $$@.tmp; else mv -f $$@.tmp $$@; fi
endef
$(eval $(call args_file,$(STATE)/raw-files.txt,$(RAW_NPZ)))
$(eval $(call args_file,$(STATE)/sample.args,$(COMMON) $(SAMPLE_ARGS) $(call goal_args,sample-data)))
$(eval $(call args_file,$(STATE)/prune.args,$(COMMON) $(PRUNE_ARGS) $(call goal_args,prune)))
$(eval $(call args_file,$(STATE)/pad.args,$(COMMON) $(PAD_ARGS) $(call goal_args,pad)))
$(eval $(call args_file,$(STATE)/extract.args,$(COMMON) $(EXTRACT_ARGS) $(call goal_args,extract)))
$(eval $(call args_file,$(STATE)/baseline.args,$(COMMON) $(FOLD_ARGS) $(BASELINE_ARGS) $(call goal_args,baseline)))
$(eval $(call args_file,$(STATE)/gbdt.args,$(COMMON) $(FOLD_ARGS) $(GBDT_ARGS) $(call goal_args,train-gbdt)))
$(eval $(call args_file,$(STATE)/analytical.args,$(COMMON) $(FOLD_ARGS) $(ANALYTICAL_ARGS) $(call goal_args,train-analytical)))
$(eval $(call args_file,$(STATE)/gnn.args,$(COMMON) $(FOLD_ARGS) $(if $(EXPERIMENT),experiment=$(EXPERIMENT)) $(GNN_ARGS) $(call goal_args,train-gnn)))
$(eval $(call args_file,$(STATE)/ensemble.args,$(COMMON) $(FOLD_ARGS) $(ENSEMBLE_ARGS) $(call goal_args,ensemble)))
SUBMISSION_ARGS := $(STATE)/submission/$(subst /,^,$(SUBMISSION)).args
$(eval $(call args_file,$(SUBMISSION_ARGS),$(COMMON) predictor=$(MODEL) split=$(SPLIT) keep_copy=$(KEEP_COPY) $(call goal_args,submission)))
REPORT_ARGS := $(STATE)/evaluate/$(subst /,^,$(REPORT)).args
# the CSV's checksum, not its rule: evaluating a hand-made CSV never rewrites it
$(eval $(call args_file,$(REPORT_ARGS),$(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(shell { cksum < '$(SUBMISSION)'; } 2>/dev/null) $(call goal_args,evaluate)))
$(eval $(call args_file,$(STATE)/report.args,$(COMMON) $(call goal_args,report)))

.PHONY: help all venv test sample-data inspect prune pad extract baseline train-gbdt train-analytical train-gnn ensemble submission validate evaluate report download bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-14s %s\n", $$1, $$2}'
	@echo "  variables: DATA=$(DATA) DATASET=$(DATASET) SPLIT=$(SPLIT) MODEL=$(MODEL) SUBMISSION=$(SUBMISSION) ARGS=\"key=value ...\""
	@echo "             FOLDS=<K> FINAL=true EXPERIMENT=<conf/experiment name, e.g. full_gpu> <STAGE>_ARGS=\"key=value ...\""

# Every stage is a file target, so a second `make all` does no stage work. The valid-split
# steps run where DATA has a valid split, the test submission where it has a test split.
has_split = $$(find -L '$(DATA)' -path '*/$(1)/*.npz' -print -quit 2>/dev/null)
all: $(INSTALLED) $(RAW) $(EXTRACTED) ## every stage on DATA (default: the embedded sample) -> the ensemble's submission, valid scores and report
	@$(MAKE) --no-print-directory baseline ARGS=
	@$(MAKE) --no-print-directory train-gbdt ARGS=
	@$(MAKE) --no-print-directory train-analytical ARGS=
	@$(MAKE) --no-print-directory train-gnn ARGS=
	@$(MAKE) --no-print-directory ensemble ARGS=
	@if [ -n "$(call has_split,valid)" ]; then \
	  $(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=valid SUBMISSION=$(VALID_SUBMISSION) KEEP_COPY=false ARGS= && \
	  $(MAKE) --no-print-directory evaluate SPLIT=valid SUBMISSION=$(VALID_SUBMISSION) ARGS= && \
	  $(MAKE) --no-print-directory report ARGS= && \
	  if [ -n "$(FOLDS)" ]; then $(PY) -m pipeline.report $(COMMON) $(FOLD_ARGS) split=oof name=out_of_fold; fi; \
	else echo "no valid split under $(DATA): no validation scores or report (see the ensemble's served-by lines above)"; fi
	@if [ -n "$(call has_split,test)" ]; then \
	  $(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=test ARGS=; \
	else echo "no test split under $(DATA): no submission"; fi

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

$(SAMPLE_ROOT)/.complete: conf/sample_data.yaml $(STATE)/sample.args | $(INSTALLED)
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(call goal_args,sample-data)

inspect: $(INSTALLED) ## check every file under DATA against the format and summarize it
	$(PY) -m pipeline.inspect $(COMMON) $(ARGS)

prune: $(PRUNED) ## keep configurable nodes and their k-hop neighbourhood -> data/interim/<dataset>/pruned
$(PRUNED): $(INSTALLED) $(RAW) conf/prune.yaml $(STATE)/prune.args
	$(PY) -m pipeline.prune $(COMMON) $(PRUNE_ARGS) $(call goal_args,prune)

pad: $(PADDED) ## unambiguous -1 layout padding, train-fitted normalization -> data/interim/<dataset>/padded
$(PADDED): $(PRUNED) conf/pad.yaml $(STATE)/pad.args
	$(PY) -m pipeline.pad $(COMMON) $(PAD_ARGS) $(call goal_args,pad)

extract: $(EXTRACTED) ## dedup and pack configs; GNN tensors and GBDT tables -> data/processed/<dataset>
$(EXTRACTED): $(PADDED) conf/extract.yaml $(STATE)/extract.args
	$(PY) -m pipeline.extract $(COMMON) $(EXTRACT_ARGS) $(call goal_args,extract)

baseline: $(BASELINE_DONE) ## score valid and test configs with the training-free baseline ranker -> predictions baseline/{valid,test}
$(BASELINE_DONE): $(INSTALLED) $(RAW) conf/baseline.yaml $(STATE)/baseline.args
	$(PY) -m pipeline.baseline $(COMMON) $(FOLD_ARGS) $(BASELINE_ARGS) $(call goal_args,baseline)

train-gbdt: $(GBDT_DONE) ## LightGBM lambdarank per collection -> data/models/<dataset>/gbdt, predictions gbdt/{valid,test}
$(GBDT_DONE): $(EXTRACTED) conf/train_gbdt.yaml conf/arch/gbdt.yaml $(STATE)/gbdt.args
	$(PY) -m pipeline.train_gbdt $(COMMON) $(FOLD_ARGS) $(GBDT_ARGS) $(call goal_args,train-gbdt)

train-analytical: $(ANALYTICAL_DONE) ## analytical layout cost terms with non-negative weights fitted per collection -> data/models/<dataset>/analytical, predictions analytical/{valid,test}
$(ANALYTICAL_DONE): $(EXTRACTED) conf/train_analytical.yaml conf/arch/analytical.yaml $(STATE)/analytical.args
	$(PY) -m pipeline.train_analytical $(COMMON) $(FOLD_ARGS) $(ANALYTICAL_ARGS) $(call goal_args,train-analytical)

train-gnn: $(GNN_STAMP) ## train the cross-config-attention GNN per collection; predictions gnn/{valid,test}
$(GNN_STAMP): $(EXTRACTED) conf/train_gnn.yaml conf/arch/gnn.yaml $(wildcard conf/experiment/*.yaml) $(STATE)/gnn.args
	$(PY) -m pipeline.train_gnn $(COMMON) $(FOLD_ARGS) $(GNN_ARGS) $(call goal_args,train-gnn)

ensemble: $(ENSEMBLE_DONE) ## blend baseline/gbdt/analytical/gnn per collection with weights fitted on valid -> predictions ensemble/{valid,test}
$(ENSEMBLE_DONE): $(BASELINE_DONE) $(GBDT_DONE) $(ANALYTICAL_DONE) $(GNN_STAMP) conf/ensemble.yaml $(STATE)/ensemble.args
	$(PY) -m pipeline.ensemble $(COMMON) $(FOLD_ARGS) $(ENSEMBLE_ARGS) $(call goal_args,ensemble)

# a model's predictions come from its stage, whose stamp is written after them (another MODEL
# name: its predictions file as it is)
STAMP_baseline := $(BASELINE_DONE)
STAMP_gbdt := $(GBDT_DONE)
STAMP_analytical := $(ANALYTICAL_DONE)
STAMP_gnn := $(GNN_STAMP)
STAMP_ensemble := $(ENSEMBLE_DONE)
MODEL_DONE := $(or $(STAMP_$(MODEL)),$(PRED)/$(MODEL)/$(SPLIT).parquet)

submission: $(SUBMISSION) ## write SUBMISSION from MODEL's predictions on SPLIT (validated before writing; a copy is kept when the content is new)
$(SUBMISSION): $(INSTALLED) $(MODEL_DONE) $(SUBMISSION_ARGS)
	$(PY) -m pipeline.submission $(COMMON) predictor=$(MODEL) split=$(SPLIT) submission=$(SUBMISSION) keep_copy=$(KEEP_COPY) $(call goal_args,submission)

validate: $(INSTALLED) ## check SUBMISSION against the files of SPLIT under DATA
	$(PY) -m pipeline.validate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(ARGS)

evaluate: $(REPORT) ## score SUBMISSION against SPLIT=valid under DATA; writes REPORT
$(REPORT): $(INSTALLED) $(REPORT_ARGS)
	$(PY) -m pipeline.evaluate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) report=$(REPORT) $(call goal_args,evaluate)

report: $(VALIDATION) ## validation report of every model's valid predictions -> reports/<dataset>/validation.{md,json} + PNG plots
$(VALIDATION): $(INSTALLED) conf/report.yaml $(STATE)/report.args $(wildcard $(PRED)/*/valid.parquet) $(wildcard $(REPORTS)/$(DATASET)/audit.json)
	$(PY) -m pipeline.report $(COMMON) $(call goal_args,report)

download: $(INSTALLED) ## fetch the real competition data into data/raw/kaggle with the Kaggle CLI
	$(PY) -m pipeline.download $(COMMON) $(ARGS)

bench: $(INSTALLED) ## benchmarks on a generated full-size layout graph: prune/pad/extract, then GNN train/infer configs/s (JSON lines)
	$(PY) -m pipeline.bench $(ARGS)
	$(PY) -m pipeline.bench_gnn $(GNN_BENCH_ARGS)

clean: ## remove generated artifacts of DATASET (keeps .venv and raw data)
	rm -rf $(DATA_DIR)/interim/$(DATASET) $(DATA_DIR)/processed/$(DATASET) $(DATA_DIR)/models/$(DATASET) $(PRED) $(REPORTS)/$(DATASET) logs

# --- Kaggle packaging ---------------------------------------------------------------------------
.PHONY: kaggle kaggle-push
KAGGLE_OUT ?= build/kaggle
KAGGLE_BUNDLE := $(KAGGLE_OUT)/.complete

kaggle: $(KAGGLE_BUNDLE) ## Kaggle bundles: dataset (code, trained artifacts, wheels) and notebook -> build/kaggle
$(KAGGLE_BUNDLE): $(INSTALLED) conf/kaggle.yaml notebooks/kaggle_submission.py $(wildcard pipeline/*.py pipeline/*/*.py features/*.py models/*.py conf/*.yaml conf/*/*.yaml) \
    $(shell find $(DATA_DIR)/models/$(DATASET) $(DATA_DIR)/interim/$(DATASET)/padded/stats.json -type f 2>/dev/null)
	$(PY) -m pipeline.kaggle $(COMMON) out=$(KAGGLE_OUT) $(ARGS)

kaggle-push: $(INSTALLED) ## rebuild the Kaggle bundles and upload them (ARGS="owner=<kaggle user>"; says what to set without CLI or credentials)
	$(PY) -m pipeline.kaggle $(COMMON) mode=push out=$(KAGGLE_OUT) $(ARGS)

# ---- GNN benchmarks and the transductive check ----
FILE ?=
.PHONY: bench-gnn gpu-check rehearsal transductive

bench-gnn: $(INSTALLED) ## only the GNN training and inference throughput (configs/s) on a generated full-size layout graph (JSON lines)
	$(PY) -m pipeline.bench_gnn $(ARGS)

rehearsal: $(INSTALLED) ## every stage on a generated dataset at real per-graph sizes (cached): wall time and peak RSS per stage and collection, projected to the real dataset (reports/rehearsal/rehearsal.md)
	$(PY) -m pipeline.rehearsal $(FOLD_ARGS) $(ARGS)

gpu-check: $(INSTALLED) ## on a CUDA machine: the GPU tests (bf16/fp16 training, checkpoint reload, 1-rank nccl) and bench-gnn on cuda, one summary; elsewhere says there is no GPU (exit 0)
	$(PY) -m pipeline.gpu_check $(if $(ARGS),--bench-args $(ARGS))

transductive: $(INSTALLED) ## every model on unseen configs of every labelled graph of DATA (or FILE=<npz>): held-out tau per graph and seed -> reports/<dataset>/transductive.{md,json,png}
	$(PY) -m pipeline.transductive $(COMMON) $(if $(FILE),file='$(FILE)',data='$(DATA)') $(ARGS)

# ---- runtime audit (pipeline.audit, models/audit.py) ----
AUDIT := $(REPORTS)/$(DATASET)/audit.json
$(eval $(call args_file,$(STATE)/audit.args,$(COMMON) $(call goal_args,audit)))
.PHONY: audit

audit: $(AUDIT) ## how far each train/valid graph's runtimes can be trusted (noise, spread, ceiling, flags) -> reports/<dataset>/audit.{md,json,png}
$(AUDIT): $(INSTALLED) $(RAW) conf/audit.yaml $(STATE)/audit.args
	$(PY) -m pipeline.audit $(COMMON) $(call goal_args,audit)

# ---- rank the configs of one program with the trained models (pipeline.rank) ----
.PHONY: rank
COLLECTION ?=
TOP ?= 10
OUT ?=
rank: $(INSTALLED) ## rank one program's configs with the models trained on DATA: FILE=<npz> [COLLECTION=] [MODEL=ensemble] [TOP=10] [OUT=<json>]
	@if [ -z '$(FILE)' ]; then echo "error: give the program to rank: make rank FILE=<npz> [COLLECTION=layout:xla:random]" >&2; exit 2; fi
	$(PY) -m pipeline.rank $(COMMON) file='$(FILE)' model=$(MODEL) top=$(TOP) \
	  $(if $(COLLECTION),collection=$(COLLECTION)) $(if $(OUT),out='$(OUT)') $(ARGS)

# ---- hyperparameter sweeps (conf/hparams_search/, hydra-optuna-sweeper) ----
.PHONY: sweep
SEARCH ?= gnn_optuna
sweep: $(EXTRACTED) ## Optuna sweep of a training stage: SEARCH=gnn_optuna|gbdt_optuna ARGS="collections=[...] hydra.sweeper.n_trials=N" -> logs/sweeps/
	$(PY) -m pipeline.$(if $(filter gbdt%,$(SEARCH)),train_gbdt,train_gnn) -m $(COMMON) hparams_search=$(SEARCH) $(ARGS)
