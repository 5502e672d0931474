# tsens: `make demo` runs the main job on the shipped samples, `make test` runs the tests.
# Both create .venv on first use. TORCH pins the local CPU build of torch on this machine
# (pyproject.toml keeps torch>=2.2 for users); override with `make TORCH=torch ...`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
SAMPLES := sample_checkpoints

.PHONY: demo test bench samples zoo fuzz lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[plot]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e ".[test]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tsens info $(SAMPLES)/digits-64-32-10/epoch=80.safetensors
	$(BIN)/tsens bound $(SAMPLES)/*/*.safetensors $(SAMPLES)/*/*.pt
	$(BIN)/tsens bound $(SAMPLES)/digits-*/epoch=80.safetensors --data digits-test
	$(BIN)/tsens jacobian $(SAMPLES)/digits-64-32-10/*.safetensors --data digits-test
	$(BIN)/tsens activations $(SAMPLES)/digits-64-32-10/epoch=80.safetensors --data digits-test
	$(BIN)/tsens regions $(SAMPLES)/digits-64-32-10/epoch=80.safetensors --data digits --test digits-test
	$(BIN)/tsens transitions $(SAMPLES)/digits-64-32-10/epoch=80.safetensors --data digits-test --count 20
	$(BIN)/tsens estimate-gap $(SAMPLES)/digits-*/*.safetensors --train digits --test digits-test

LINTED := tsens tests bench scripts $(SAMPLES)

test: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_measures.py
	$(BIN)/python bench/bench_gap.py
	$(BIN)/python bench/bench_transitions.py

samples: $(VENV)/.installed-dev
	$(BIN)/python scripts/make_datasets.py
	$(BIN)/python $(SAMPLES)/make_samples.py

# The development zoo (90 runs, 450 checkpoints; two worker processes, 7m43s to 14m43s measured on a busy 2-core machine).
zoo: $(VENV)/.installed
	$(BIN)/python scripts/make_zoo.py

# Mutated files of every format through the readers and the CLI (scripts/fuzz.py): 10,000
# cases, under a minute on two cores; bad cases are saved under build/fuzz/ (report.txt).
fuzz: $(VENV)/.installed-test
	$(BIN)/python scripts/fuzz.py --cases 10000

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
