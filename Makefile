# ticketlab: the README's commands. VENV may point at another environment (CI keeps one in a cache).
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup study db-stop omniboard test test-all journey faults bench gpu-check
setup:
	@bash scripts/setup.sh

study: setup  ## the main job: a small real study into a local database, analysed into figures (about 5 min)
	$(PY) -m experiments.study

db-stop:  ## stop the local run database started by `make study` (its data stay)
	$(PY) -m experiments.localdb stop

omniboard: setup  ## Omniboard on the study's database: http://127.0.0.1:9000/sacred
	$(PY) -m experiments.omniboard -m $$($(PY) -m experiments.localdb start | sed -n 's/.*-m \([^ ]*\).*/\1/p')

test: setup  ## the default test suite (15 min on 2 cores after set-up)
	$(PY) -m pytest --durations=15

test-all: setup  ## every test, also those marked slow and the fault suite (a few minutes more)
	$(PY) -m pytest -m ""

journey: setup  ## the README's journey at tiny sizes, in order, into one database (about 8 min on 2 cores)
	$(PY) -m pytest tests/test_journey.py -m "journey and not slow" -p no:cacheprovider

faults: setup  ## the fault suite: real faults against real processes; prints one table of what was lost (nothing)
	$(PY) -m pytest tests/faults -m "faults and not slow" -p no:cacheprovider

bench: setup  ## speed benchmarks (ratios against a bare PyTorch loop)
	$(PY) bench/masked_step.py
	$(PY) bench/load_runs.py
	$(PY) bench/sweep_engines.py

gpu-check:  ## on a machine with a CUDA GPU, offline too: CUDA tests, experiments on cuda, GPU benchmarks (< 9 min)
	@PYTHON=$${PYTHON:-$$([ -x $(PY) ] && echo $(PY) || echo python3)} bash scripts/gpu-check.sh $(STEPS)
