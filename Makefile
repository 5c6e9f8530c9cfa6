# vilt_lab: every target a researcher needs. `make help` lists them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.DEFAULT_GOAL := help
DEMO_RUNS ?= runs
# The demo trains in DEMO_PROCS processes of one thread each (data parallel over the cores).
DEMO_PROCS ?= 2

.PHONY: help install test test-fast lint params demo shapes

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+( [a-zA-Z0-9_%-]+)*:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

# pip takes ~20 s even when nothing changed, before every target, so the install is skipped while
# .install.stamp is newer than pyproject.toml and $(PYTHON) imports vilt_lab from this checkout (a
# `make` in another clone re-points the editable install there). `make install FORCE=1` reinstalls.
INSTALLED_HERE = $(PYTHON) -c "import pathlib, sys, vilt_lab; sys.exit(pathlib.Path(vilt_lab.__file__).resolve().parent != pathlib.Path('src/vilt_lab').resolve())" 2>/dev/null

install: ## install vilt_lab with its dev extras into $(PYTHON) (skipped when up to date; FORCE=1 reinstalls)
	@if [ -z "$(FORCE)" ] && [ .install.stamp -nt pyproject.toml ] && $(INSTALLED_HERE); then \
		echo "vilt_lab is installed from this checkout and pyproject.toml is unchanged (FORCE=1 reinstalls)"; \
	else \
		$(PIP) install -q -e '.[dev]' && touch .install.stamp; \
	fi

test: install ## install what is needed, then run the whole test suite (the CI command)
	$(PYTHON) -m pytest -q

test-fast: install ## the suite without the slow tests (pytest -m "not slow"), while you work
	$(PYTHON) -m pytest -q -m "not slow"

demo: install ## write the shapes world, pre-train the tiny model on CPU, evaluate: $(DEMO_RUNS)/demo/summary.json
	OMP_NUM_THREADS=1 $(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(DEMO_PROCS) \
		-m vilt_lab.train experiment=demo paths.runs_dir=$(DEMO_RUNS)

shapes: install ## (re)write the shapes world alone into data/shapes
	vilt-shards shapes --out data/shapes --n 4000 --overwrite

lint: install ## ruff over the sources and tests
	$(PYTHON) -m ruff check src tests
	$(PYTHON) -m ruff format --check src tests

params: install ## print ViLT-B/32's parameter counts in the paper's Table 6 accounting
	$(PYTHON) -m vilt_lab.measure.param_count base32

# Runs on any machine in a minute or two: no data, no weights, the GPU if there is one.
.PHONY: table6
table6: install ## the paper's Table 6 here (params, counted FLOPs, B=1 latency): experiments/table6/result.md [ARGS='--repeats 50']
	$(PYTHON) -m vilt_lab.bench table6 $(ARGS)

# One target per raw-dataset converter: coco f30k vg gcc sbu cc12m vqav2 nlvr2 (docs/data.md, "Datasets").
shards-%: install ## raw dataset -> shards: make shards-coco RAW=/data/coco OUT=/shards/coco [ARGS='--resize-shorter 384']
	@test -n "$(RAW)" -a -n "$(OUT)" || { echo "usage: make shards-$* RAW=/raw/$* OUT=/shards/$* [ARGS='--split ...']"; exit 2; }
	$(PYTHON) -m vilt_lab.data.cli $* --root $(RAW) --out $(OUT) $(ARGS)

.PHONY: bench-loader
bench-loader: install ## time our sample pipeline against HF's ViltImageProcessor on one core (prints the ratio last)
	$(PYTHON) -m vilt_lab.bench loader $(ARGS)

.PHONY: bench-canvas
bench-canvas: install ## image canvases (data.image_buckets, data.canvas_step) on the CPU: padded tokens, batch shapes, step time [ARGS='--json']
	$(PYTHON) -m vilt_lab.bench canvas $(ARGS)

# NO_INSTALL=1: no pip (a GPU node or cluster without a network): the package from this
# checkout (PYTHONPATH=src), its dependencies already importable; docs/benchmarks.md says more.
.PHONY: bench-model
bench-model: $(if $(NO_INSTALL),,install) ## ours vs HF ViltModel on the same weights: pre-training step, latency, throughput, exact retrieval (GPU if any; CPU sizes < 10 min) [ARGS='--json out.json'] [NO_INSTALL=1]
	$(if $(NO_INSTALL),PYTHONPATH=src$(if $(PYTHONPATH),:$(PYTHONPATH)) )$(PYTHON) -m vilt_lab.bench model $(ARGS)

# `make demo`'s last checkpoint: what the fine-tuning demo starts from.
DEMO_CKPT = $(lastword $(sort $(wildcard $(DEMO_RUNS)/demo/checkpoints/step_*)))
FINETUNE_RUNS ?= $(DEMO_RUNS)/finetune-demo
FINETUNE_DEMO = OMP_NUM_THREADS=1 $(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(DEMO_PROCS) -m

.PHONY: finetune-demo
finetune-demo: install ## after `make demo`: fine-tune its checkpoint on shapes VQA, NLVR2, retrieval; zero-shot retrieval; one table
	@test -n "$(DEMO_CKPT)" || { echo "no checkpoint under $(DEMO_RUNS)/demo/checkpoints: run make demo first"; exit 2; }
	@test -d data/shapes/retrieval/test || { echo "data/shapes has no retrieval/test split (written by an older vilt_lab): rm -r data/shapes and run make demo again"; exit 2; }
	$(FINETUNE_DEMO) vilt_lab.eval task=irtr data=shapes_retrieval checkpoint=$(DEMO_CKPT) out_dir=$(FINETUNE_RUNS)/irtr-zero-shot
	$(FINETUNE_DEMO) vilt_lab.train experiment=finetune_demo_vqa model.init_from=$(DEMO_CKPT) paths.runs_dir=$(FINETUNE_RUNS) name=vqa
	$(FINETUNE_DEMO) vilt_lab.train experiment=finetune_demo_nlvr2 model.init_from=$(DEMO_CKPT) paths.runs_dir=$(FINETUNE_RUNS) name=nlvr2
	$(FINETUNE_DEMO) vilt_lab.train experiment=finetune_demo_irtr model.init_from=$(DEMO_CKPT) paths.runs_dir=$(FINETUNE_RUNS) name=irtr
	$(PYTHON) -m vilt_lab.summary_table $(FINETUNE_RUNS)/irtr-zero-shot/summary.json $(FINETUNE_RUNS)/vqa/summary.json $(FINETUNE_RUNS)/nlvr2/summary.json $(FINETUNE_RUNS)/irtr/summary.json

.PHONY: eval
eval: install ## evaluate a checkpoint: make eval ARGS='checkpoint=DIR task=vqa data=vqav2 split=test'
	$(PYTHON) -m vilt_lab.eval $(ARGS)

# The paper's tables (experiments/tableN): `make table5` renders result.md (+ PNGs) from the runs
# under $(PAPER_RUNS), missing runs listed with their commands; `make table5-run` launches the
# missing ones in dependency order (LAUNCH='accelerate launch --num_processes 8 --mixed_precision
# bf16 -m', or SLURM=1 to submit them all to SLURM at once; ARGS='--set paths.data_dir=/shards' adds
# an override to every run that takes it, ARGS='--slurm-set partition=gpu' shapes the SLURM jobs).
PAPER_RUNS ?= runs/paper
REPORT = $(PYTHON) -m vilt_lab.report.cli

.PHONY: table2 table3 table4 table5 table2-run table3-run table4-run table5-run
table2 table3 table4 table5: install ## render experiments/tableN/result.md from the runs (never fails on missing runs)
	$(REPORT) render experiments/$@ --runs $(PAPER_RUNS)

table2-run table3-run table4-run table5-run: install ## launch the missing runs of a table, pre-training first (resumable)
	$(REPORT) run experiments/$(@:-run=) --runs $(PAPER_RUNS) $(if $(LAUNCH),--launch '$(LAUNCH)') $(if $(SLURM),--slurm) $(ARGS)

# Beyond the paper (experiments/future, docs/future-work.md): the final recipe with MixGen, MIM,
# both, ViLT-L/32 and the 14M mix; the same launch options as the paper's tables.
.PHONY: table-future table-future-run
table-future: install ## render experiments/future/result.md (MixGen, MIM, ViLT-L/32, 14M) from the runs
	$(REPORT) render experiments/future --runs $(PAPER_RUNS)

table-future-run: install ## launch the future-work table's missing runs, pre-training first (resumable)
	$(REPORT) run experiments/future --runs $(PAPER_RUNS) $(if $(LAUNCH),--launch '$(LAUNCH)') $(if $(SLURM),--slurm) $(ARGS)

# Table 5 on the shapes world, end to end on two CPU cores (experiments/shapes/): 5 pre-training
# runs, 18 fine-tuning runs and 5 zero-shot evaluations, each training in DEMO_PROCS processes of
# one thread as `make demo` does; then experiments/table5/result-shapes.md and its PNGs. Resumable.
SHAPES_RUNS ?= runs/shapes

.PHONY: table5-shapes table5-shapes-run
table5-shapes-run: install ## the shapes-world Table 5's missing runs on 2 CPU cores (resumable)
	OMP_NUM_THREADS=1 $(REPORT) run experiments/shapes/table5 --runs $(SHAPES_RUNS) \
		--launch '$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(DEMO_PROCS) -m' $(ARGS)

table5-shapes: table5-shapes-run ## the shapes-world Table 5 end to end (38.5 minutes measured): experiments/table5/result-shapes.md
	$(REPORT) render experiments/shapes/table5 --runs $(SHAPES_RUNS) --out experiments/table5/result-shapes.md

# The paper's future work on the shapes world (experiments/shapes/future/): the demo's pre-training,
# +MixGen, +MIM, +both and MPP, three seeds each (15 runs), a zero-shot retrieval evaluation of
# each; then experiments/shapes/future/result.md, every row against the baseline's seed spread.
.PHONY: future-shapes future-shapes-run
future-shapes-run: install ## the shapes-world future-work table's missing runs on 2 CPU cores (resumable)
	OMP_NUM_THREADS=1 $(REPORT) run experiments/shapes/future --runs $(SHAPES_RUNS) \
		--launch '$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(DEMO_PROCS) -m' $(ARGS)

future-shapes: future-shapes-run ## MixGen and MIM on the shapes world over 3 seeds: experiments/shapes/future/result.md
	$(REPORT) render experiments/shapes/future --runs $(SHAPES_RUNS) --out experiments/shapes/future/result.md
