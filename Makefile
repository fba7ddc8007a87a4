# TpuGraphs runtime ranking: every stage is a target; `make help` lists them. The stage rules
# (prune ... ensemble) are generated from the stage graph, pipeline/graph.py, which also names
# the dataset of DATA; artifact paths come from conf/paths/default.yaml.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
GRAPH := $(PYTHON) -m pipeline.graph
# generated from pipeline/graph.py and conf/paths/default.yaml whenever either is newer
generated = $(shell mkdir -p build/make; f=build/make/$(1).mk; [ $$f -nt pipeline/graph.py -a $$f -nt conf/paths/default.yaml ] \
  || { $(GRAPH) $(2) > $$f.$$$$ && mv -f $$f.$$$$ $$f; }; echo $$f)
include $(call generated,paths,make-paths)
SAMPLE_ROOT := $(call RAW_OF,sample)

ifeq ($(origin DATA),undefined)
  DATASET ?= sample
  DATA := $(call RAW_OF,$(DATASET))
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
REPORT ?= $(PATH_reports)/evaluation_$(SPLIT).json
KEEP_COPY ?= true
TOP ?= 10
KAGGLE_OUT ?= build/kaggle
# ARGS reaches only the target named on the command line, never a stage run as a prerequisite;
# <STAGE>_ARGS (PRUNE_ARGS, GBDT_ARGS, GNN_ARGS, ...) reach that stage in every run, `make all` too
goal_args = $(if $(filter $(1),$(MAKECMDGOALS)),$(ARGS))
FOLD_ARGS := $(strip $(if $(FOLDS),folds=$(FOLDS)) $(if $(FINAL),final=$(FINAL)) $(if $(FOLD_SPLITS),fold_splits=$(FOLD_SPLITS)))
COMMON := paths.dataset=$(DATASET) paths.data_dir=$(DATA_DIR) paths.raw=$(DATA) paths.submissions=$(SUBMISSIONS) paths.reports=$(PATH_reports)
INSTALLED := $(VENV)/.installed
# what each stage last ran with (STATE/<stage>.args): a stage reruns when its arguments change
STATE := $(PATH_interim)/.make
PRED := $(PATH_predictions)

# Raw inputs: the embedded sample's stamp stands for its files; any other root lists each .npz
# (a new or changed file reruns prune) and a listing file that changes when a file comes or goes.
ifeq ($(IS_SAMPLE),yes)
RAW := $(DATA)/.complete
else
RAW_NPZ := $(shell find -L '$(DATA)' -name '*.npz' -type f 2>/dev/null | LC_ALL=C sort)
RAW := $(RAW_NPZ) $(STATE)/raw-files.txt
endif

.PHONY: FORCE help all venv test test-fast lint submission evaluate report audit clean rank featurize kaggle bench sweep
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

include $(call generated,stages,make)

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
test-fast: $(INSTALLED) ## the tests that need no end-to-end run: all but those marked slow (a few minutes)
	$(PY) -m pytest -q -m "not slow"
LINT_PATHS := pipeline features models tests notebooks docs/examples
lint: $(INSTALLED) ## ruff: lint and import order (pyproject.toml [tool.ruff]); ARGS=--fix applies the safe fixes
	$(VENV)/bin/ruff check $(LINT_PATHS) $(ARGS)
$(SAMPLE_ROOT)/.complete: conf/sample_data.yaml $(STATE)/sample.args | $(INSTALLED)
	$(PY) -m pipeline.sample_data $(COMMON) $(SAMPLE_ARGS) $(call goal_args,sample-data)

# a model's predictions come from its stage, whose stamp is written after them (another MODEL: its file as it is)
submission: $(SUBMISSION) ## write SUBMISSION from MODEL's predictions on SPLIT (validated before writing; a copy is kept when the content is new)
$(SUBMISSION): $(INSTALLED) $(or $(STAMP_$(MODEL)),$(PRED)/$(MODEL)/$(SPLIT).parquet) $(SUBMISSION_ARGS)
	$(PY) -m pipeline.submission $(COMMON) predictor=$(MODEL) split=$(SPLIT) submission=$(SUBMISSION) keep_copy=$(KEEP_COPY) $(call goal_args,submission)
evaluate: $(REPORT) ## score SUBMISSION against SPLIT=valid under DATA; writes REPORT
$(REPORT): $(INSTALLED) $(REPORT_ARGS)
	$(PY) -m pipeline.evaluate $(COMMON) split=$(SPLIT) submission=$(SUBMISSION) report=$(REPORT) $(call goal_args,evaluate)
report: $(PATH_reports)/validation.json ## validation report of every model's valid predictions -> reports/<dataset>/validation.{md,json} + PNG plots
$(PATH_reports)/validation.json: $(INSTALLED) conf/report.yaml $(STATE)/report.args $(wildcard $(PRED)/*/valid.parquet $(PATH_reports)/audit.json)
	$(PY) -m pipeline.report $(COMMON) $(call goal_args,report)
audit: $(PATH_reports)/audit.json ## how far each train/valid graph's runtimes can be trusted (noise, spread, ceiling, flags) -> reports/<dataset>/audit.{md,json,png}
$(PATH_reports)/audit.json: $(INSTALLED) $(RAW) conf/audit.yaml $(STATE)/audit.args
	$(PY) -m pipeline.audit $(COMMON) $(call goal_args,audit)
clean: ## remove generated artifacts of DATASET (keeps .venv and raw data)
	rm -rf $(PATH_interim) $(PATH_processed) $(PATH_models) $(PATH_predictions) $(PATH_reports) logs

rank: $(INSTALLED) ## rank one program's configs with the models trained on DATA: FILE=<npz> or HLO=<HLO text> [COLLECTION=] [MODEL=ensemble] [TOP=10] [OUT=<json>] [ALLOW_OPTIMIZED=true]
	@if [ -z '$(FILE)$(HLO)' ]; then echo "error: give the program to rank: make rank FILE=<npz> or HLO=<HLO text file> [COLLECTION=layout:xla:random]" >&2; exit 2; fi
	$(PY) -m pipeline.rank $(COMMON) $(if $(FILE),file='$(FILE)') $(if $(HLO),hlo='$(HLO)') model=$(MODEL) top=$(TOP) \
	  $(if $(COLLECTION),collection=$(COLLECTION)) $(if $(CONFIGS),configs=$(CONFIGS)) $(if $(OUT),out='$(OUT)') \
	  $(if $(ALLOW_OPTIMIZED),allow_optimized=$(ALLOW_OPTIMIZED)) $(ARGS)
featurize: $(INSTALLED) ## HLO text before XLA's optimizations as a TpuGraphs layout npz with candidate configs: HLO=<file> OUT=<npz> [CONFIGS=1000] [ALLOW_OPTIMIZED=true]
	@if [ -z '$(HLO)' ] || [ -z '$(OUT)' ]; then echo "error: give the HLO text and the npz to write: make featurize HLO=<file> OUT=<npz>" >&2; exit 2; fi
	$(PY) -m pipeline.featurize hlo='$(HLO)' out='$(OUT)' $(if $(CONFIGS),configs=$(CONFIGS)) \
	  $(if $(ALLOW_OPTIMIZED),allow_optimized=$(ALLOW_OPTIMIZED)) $(ARGS)

kaggle: $(KAGGLE_OUT)/.complete ## Kaggle bundles: dataset (code, trained artifacts, wheels) and notebook -> build/kaggle
$(KAGGLE_OUT)/.complete: $(INSTALLED) notebooks/kaggle_submission.py $(shell find pipeline features models conf -name '*.py' -o -name '*.yaml') \
    $(shell find $(PATH_models) $(PATH_interim)/padded/stats.json -type f 2>/dev/null)
	$(PY) -m pipeline.kaggle $(COMMON) out=$(KAGGLE_OUT) $(ARGS)

bench: $(INSTALLED) ## benchmarks on a generated full-size layout graph: prune/pad/extract, then GNN train/infer configs/s (JSON lines)
	$(PY) -m pipeline.tools.bench $(ARGS) && $(PY) -m pipeline.tools.bench_gnn $(GNN_BENCH_ARGS)
SEARCH ?= gnn_optuna
sweep: $(STAMP_EXTRACT) ## Optuna sweep of a training stage: SEARCH=gnn_optuna|gbdt_optuna ARGS="collections=[...] hydra.sweeper.n_trials=N" -> logs/sweeps/
	$(PY) -m pipeline.$(if $(filter gbdt%,$(SEARCH)),train_gbdt,train_gnn) -m $(COMMON) hparams_search=$(SEARCH) $(ARGS)
