PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench learning lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	rm -rf out/demo
	$(VENV)/bin/rllib-alma-mi train --output out/demo
	$(VENV)/bin/rllib-alma-mi plot out/demo --metric return --out out/demo/return.png
	$(VENV)/bin/rllib-alma-mi plot out/demo --metric tasks_completed \
		--out out/demo/tasks_completed.png
	$(VENV)/bin/rllib-alma-mi render --checkpoint out/demo --out out/demo/episode.gif
	@echo "demo files: out/demo/return.png, out/demo/tasks_completed.png (learning curves),"
	@echo "  out/demo/episode.gif (one greedy episode), out/demo/trial_*/ (progress.csv,"
	@echo "  TensorBoard events, checkpoints: tensorboard --logdir out/demo)"

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

# The quick benchmarks (about 10 minutes); `make learning` runs the learning table (hours).
BENCHES := env_throughput mine_speed mine_gaussian train_throughput scripted_reference

bench: setup
	@for b in $(BENCHES); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done

# results/learning_500k ran with four envs per env runner, the default then.
learning: setup
	$(PY) benchmarks/learning.py --methods heuristic flat alma_mi alma_mi_imitation alma --seeds 0 1 \
		--budget 500000 --envs-per-runner 4 --out results/learning_500k

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
