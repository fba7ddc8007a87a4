# TpuGraphs runtime ranking: every stage is a target; `make help` lists them. The stage rules
# (prune ... ensemble) are generated from the stage graph, pipeline/graph.py, which also names
# the dataset of DATA; artifact paths come from conf/paths/default.yaml.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
SAMPLE_ROOT := $(DATA_DIR)/raw/sample
GRAPH := $(PYTHON) -m pipeline.graph

ifeq ($(origin DATA),undefined)
  DATASET ?= sample
  DATA := $(DATA_DIR)/raw/$(DATASET)
else ifeq ($(origin DATASET),undefined)
  DATASET := $(shell $(GRAPH) dataset '$(DATA)' '$(SAMPLE_ROOT)')
endif
IS_SAMPLE := $(shell [ "$$(realpath -m '$(DATA)')" = "$$(realpath -m '$(SAMPLE_ROOT)')" ] && echo yes)
ifeq ($(DATASET)$(IS_SAMPLE),sample)
  $(error DATASET=sample names the embedded sample's artifacts; DATA=$(DATA) is another root: give it another DATASET name)
endif

SPLIT ?= test
MODEL ?= ensemble
SUBMISSIONS ?= submissions
SUBMISSION ?= $(SUBMISSIONS)/$(if $(filter sample,$(DATASET)),,$(DATASET)/)submission.csv
REPORTS ?= reports
REPORT ?= $(REPORTS)/$(DATASET)/evaluation_$(SPLIT).json
KEEP_COPY ?= true
EXPERIMENT ?=
FILE ?=
HLO ?=
COLLECTION ?=
TOP ?= 10
OUT ?=
CONFIGS ?=
KAGGLE_OUT ?= build/kaggle
# ARGS reaches only the target named on the command line, never a stage run as a prerequisite;
# <STAGE>_ARGS (PRUNE_ARGS, GBDT_ARGS, GNN_ARGS, ...) reach that stage in every run, `make all` too
goal_args = $(if $(filter $(1),$(MAKECMDGOALS)),$(ARGS))
FOLD_ARGS := $(strip $(if $(FOLDS),folds=$(FOLDS)) $(if $(FINAL),final=$(FINAL)) $(if $(FOLD_SPLITS),fold_splits=$(FOLD_SPLITS)))
COMMON := paths.dataset=$(DATASET) paths.data_dir=$(DATA_DIR) paths.raw=$(DATA) paths.submissions=$(SUBMISSIONS) paths.reports=$(REPORTS)/$(DATASET)
INSTALLED := $(VENV)/.installed
# what each stage last ran with (STATE/<stage>.args): a stage reruns when its arguments change
STATE := $(DATA_DIR)/interim/$(DATASET)/.make
PRED := $(DATA_DIR)/predictions/$(DATASET)

# Raw inputs: the embedded sample's stamp stands for its files; any other root lists each .npz
# (a new or changed file reruns prune) and a listing file that changes when a file comes or goes.
ifeq ($(IS_SAMPLE),yes)
RAW := $(DATA)/.complete
else
RAW_NPZ := $(shell find -L '$(DATA)' -name '*.npz' -type f 2>/dev/null | LC_ALL=C sort)
RAW := $(RAW_NPZ) $(STATE)/raw-files.txt
endif

.PHONY: FORCE help all venv test sample-data inspect submission validate evaluate report download bench bench-gnn \
  gpu-check rehearsal transductive audit rank featurize sweep clean kaggle kaggle-push
FORCE:
# $(call args_file,<file>,<arguments>): <file> holds <arguments>, rewritten only when they change
define args_file
$(1): FORCE
	$$(shell mkdir -p $$(@D))$$(file >$$@.tmp,$(2))
	@if cmp -s $$@.tmp $$@; then rm -f $$@.tmp; else mv -f $$@.tmp $$@; fi
endef
$(eval $(call args_file,$(STATE)/raw-files.txt,$(RAW_NPZ)))
$(eval $(call args_file,$(STATE)/sample.args,$(COMMON) $(SAMPLE_ARGS) $(call goal_args,sample-data)))
SUBMISSION_ARGS := $(STATE)/submission/$(subst /,^,$(SUBMISSION)).args
$(eval $(call args_file,$(SUBMISSION_ARGS),$(COMMON) predictor=$(MODEL) split=$(SPLIT) keep_copy=$(KEEP_COPY) $(call goal_args,submission)))
# the CSV's checksum, not its rule: evaluating a hand-made CSV never rewrites it
REPORT_ARGS := $(STATE)/evaluate/$(subst /,^,$(REPORT)).args
$(eval $(call args_file,$(REPORT_ARGS),$(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(shell { cksum < '$(SUBMISSION)'; } 2>/dev/null) $(call goal_args,evaluate)))
$(eval $(call args_file,$(STATE)/report.args,$(COMMON) $(call goal_args,report)))
$(eval $(call args_file,$(STATE)/audit.args,$(COMMON) $(call goal_args,audit)))

build/make/stages.mk: pipeline/graph.py conf/paths/default.yaml
	@mkdir -p $(@D) && $(GRAPH) make > $@.tmp && mv -f $@.tmp $@
include build/make/stages.mk

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  variables: DATA=$(DATA) DATASET=$(DATASET) SPLIT=$(SPLIT) MODEL=$(MODEL) SUBMISSION=$(SUBMISSION) ARGS=\"key=value ...\""
	@echo "             FOLDS=<K> FINAL=true EXPERIMENT=<conf/experiment name, e.g. full_gpu> <STAGE>_ARGS=\"key=value ...\""

has_split = $$(find -L '$(DATA)' -path '*/$(1)/*.npz' -print -quit 2>/dev/null)
all: $(INSTALLED) $(RAW) $(STAMP_EXTRACT) ## every stage on DATA (default: the embedded sample) -> the ensemble's submission, valid scores and report
	@for t in $(MODEL_STAGES) ensemble; do $(MAKE) --no-print-directory $$t ARGS= || exit 1; done
	@if [ -n "$(call has_split,valid)" ]; then V=$(SUBMISSIONS)/$(DATASET)_ensemble_valid.csv; \
	  $(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=valid SUBMISSION=$$V KEEP_COPY=false ARGS= && \
	  $(MAKE) --no-print-directory evaluate SPLIT=valid SUBMISSION=$$V ARGS= && $(MAKE) --no-print-directory report ARGS= && \
	  if [ -n "$(FOLDS)" ]; then $(PY) -m pipeline.report $(COMMON) $(FOLD_ARGS) split=oof name=out_of_fold; fi; \
	else echo "no valid split under $(DATA): no validation scores or report (see the ensemble's served-by lines above)"; fi
	@if [ -n "$(call has_split,test)" ]; then $(MAKE) --no-print-directory submission MODEL=ensemble SPLIT=test ARGS=; \
	else echo "no test split under $(DATA): no submission"; fi

venv: $(INSTALLED) ## create .venv and install the pinned requirements and the project
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt && $(PY) -m pip install -q --no-deps -e . && touch $@
test: $(INSTALLED) ## run the test suite (includes end-to-end and slow tests)
	$(PY) -m pytest -q
sample-data: $(INSTALLED) ## generate the embedded sample dataset under data/raw/sample
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(ARGS)
$(SAMPLE_ROOT)/.complete: conf/sample_data.yaml $(STATE)/sample.args | $(INSTALLED)
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(call goal_args,sample-data)
inspect: $(INSTALLED) ## check every file under DATA against the format and summarize it
	$(PY) -m pipeline.inspect $(COMMON) $(ARGS)

# a model's predictions come from its stage, whose stamp is written after them (another MODEL: its file as it is)
submission: $(SUBMISSION) ## write SUBMISSION from MODEL's predictions on SPLIT (validated before writing; a copy is kept when the content is new)
$(SUBMISSION): $(INSTALLED) $(or $(STAMP_$(MODEL)),$(PRED)/$(MODEL)/$(SPLIT).parquet) $(SUBMISSION_ARGS)
	$(PY) -m pipeline.submission $(COMMON) predictor=$(MODEL) split=$(SPLIT) submission=$(SUBMISSION) keep_copy=$(KEEP_COPY) $(call goal_args,submission)
validate: $(INSTALLED) ## check SUBMISSION against the files of SPLIT under DATA
	$(PY) -m pipeline.validate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) $(ARGS)
evaluate: $(REPORT) ## score SUBMISSION against SPLIT=valid under DATA; writes REPORT
$(REPORT): $(INSTALLED) $(REPORT_ARGS)
	$(PY) -m pipeline.evaluate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) report=$(REPORT) $(call goal_args,evaluate)
report: $(REPORTS)/$(DATASET)/validation.json ## validation report of every model's valid predictions -> reports/<dataset>/validation.{md,json} + PNG plots
$(REPORTS)/$(DATASET)/validation.json: $(INSTALLED) conf/report.yaml $(STATE)/report.args $(wildcard $(PRED)/*/valid.parquet $(REPORTS)/$(DATASET)/audit.json)
	$(PY) -m pipeline.report $(COMMON) $(call goal_args,report)
audit: $(REPORTS)/$(DATASET)/audit.json ## how far each train/valid graph's runtimes can be trusted (noise, spread, ceiling, flags) -> reports/<dataset>/audit.{md,json,png}
$(REPORTS)/$(DATASET)/audit.json: $(INSTALLED) $(RAW) conf/audit.yaml $(STATE)/audit.args
	$(PY) -m pipeline.audit $(COMMON) $(call goal_args,audit)
transductive: $(INSTALLED) ## every model on unseen configs of every labelled graph of DATA (or FILE=<npz>): held-out tau per graph and seed -> reports/<dataset>/transductive.{md,json,png}
	$(PY) -m pipeline.transductive $(COMMON) $(if $(FILE),file='$(FILE)',data='$(DATA)') $(ARGS)
download: $(INSTALLED) ## fetch the real competition data into data/raw/kaggle with the Kaggle CLI
	$(PY) -m pipeline.download $(COMMON) $(ARGS)
clean: ## remove generated artifacts of DATASET (keeps .venv and raw data)
	rm -rf $(DATA_DIR)/interim/$(DATASET) $(DATA_DIR)/processed/$(DATASET) $(DATA_DIR)/models/$(DATASET) $(PRED) $(REPORTS)/$(DATASET) logs

rank: $(INSTALLED) ## rank one program's configs with the models trained on DATA: FILE=<npz> or HLO=<HLO text> [COLLECTION=] [MODEL=ensemble] [TOP=10] [OUT=<json>]
	@if [ -z '$(FILE)$(HLO)' ]; then echo "error: give the program to rank: make rank FILE=<npz> or HLO=<HLO text file> [COLLECTION=layout:xla:random]" >&2; exit 2; fi
	$(PY) -m pipeline.rank $(COMMON) $(if $(FILE),file='$(FILE)') $(if $(HLO),hlo='$(HLO)') model=$(MODEL) top=$(TOP) \
	  $(if $(COLLECTION),collection=$(COLLECTION)) $(if $(CONFIGS),configs=$(CONFIGS)) $(if $(OUT),out='$(OUT)') $(ARGS)
featurize: $(INSTALLED) ## an XLA HLO text dump as a TpuGraphs layout npz with candidate configs: HLO=<file> OUT=<npz> [CONFIGS=1000]
	@if [ -z '$(HLO)' ] || [ -z '$(OUT)' ]; then echo "error: give the HLO text and the npz to write: make featurize HLO=<file> OUT=<npz>" >&2; exit 2; fi
	$(PY) -m pipeline.featurize hlo='$(HLO)' out='$(OUT)' $(if $(CONFIGS),configs=$(CONFIGS)) $(ARGS)

kaggle: $(KAGGLE_OUT)/.complete ## Kaggle bundles: dataset (code, trained artifacts, wheels) and notebook -> build/kaggle
$(KAGGLE_OUT)/.complete: $(INSTALLED) notebooks/kaggle_submission.py $(shell find pipeline features models conf -name '*.py' -o -name '*.yaml') \
    $(shell find $(DATA_DIR)/models/$(DATASET) $(DATA_DIR)/interim/$(DATASET)/padded/stats.json -type f 2>/dev/null)
	$(PY) -m pipeline.kaggle $(COMMON) out=$(KAGGLE_OUT) $(ARGS)
kaggle-push: $(INSTALLED) ## rebuild the Kaggle bundles and upload them (ARGS="owner=<kaggle user>"; says what to set without CLI or credentials)
	$(PY) -m pipeline.kaggle $(COMMON) mode=push out=$(KAGGLE_OUT) $(ARGS)

# tools beside the stages (pipeline/tools/)
bench: $(INSTALLED) ## benchmarks on a generated full-size layout graph: prune/pad/extract, then GNN train/infer configs/s (JSON lines)
	$(PY) -m pipeline.tools.bench $(ARGS) && $(PY) -m pipeline.tools.bench_gnn $(GNN_BENCH_ARGS)
bench-gnn: $(INSTALLED) ## only the GNN training and inference throughput (configs/s) on a generated full-size layout graph (JSON lines)
	$(PY) -m pipeline.tools.bench_gnn $(ARGS)
rehearsal: $(INSTALLED) ## every stage on a generated dataset at real per-graph sizes (cached): wall time and peak RSS per stage and collection, projected to the real dataset (reports/rehearsal/rehearsal.md)
	$(PY) -m pipeline.tools.rehearsal $(FOLD_ARGS) $(ARGS)
gpu-check: $(INSTALLED) ## on a CUDA machine: the GPU tests and bench-gnn on cuda, one summary; elsewhere says there is no GPU (exit 0)
	$(PY) -m pipeline.tools.gpu_check $(if $(ARGS),--bench-args $(ARGS))
SEARCH ?= gnn_optuna
sweep: $(STAMP_EXTRACT) ## Optuna sweep of a training stage: SEARCH=gnn_optuna|gbdt_optuna ARGS="collections=[...] hydra.sweeper.n_trials=N" -> logs/sweeps/
	$(PY) -m pipeline.$(if $(filter gbdt%,$(SEARCH)),train_gbdt,train_gnn) -m $(COMMON) hparams_search=$(SEARCH) $(ARGS)
