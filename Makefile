# nar-speech — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
STAMPS := $(CURDIR)/.stamps
PY := $(VENV)/bin/python
# FunASR is a test-only dependency (the checkpoint-import parity test builds its Paraformer).
# Installed without its dependency tree (transformers, modelscope, ...), which the model
# classes used by the test do not import.
FUNASR_TEST_PKGS := funasr==1.4.16 six==1.17.0 jieba==0.42.1
# demo knobs (see egs/synth_en/asr1/demo.sh --help), e.g. DEMO_ARGS="--ctc_epochs 4 --finetune_epochs 1"
DEMO_ARGS ?=

.PHONY: setup demo test bench peers clean-venv help

help:
	@echo "make demo   # install if needed, build the offline corpus, train, decode, score, print the table"
	@echo "make test   # install if needed, run the test suite"
	@echo "make bench  # benchmarks in bench/ (tables + JSON under bench/results)"
	@echo "make peers  # bench/peers.py: nar-speech against FunASR, ESPnet, flashlight, pyctcdecode (installs them)"

setup: $(STAMPS)/debian $(STAMPS)/venv

$(STAMPS)/debian: tools/install_debian.sh
	bash tools/install_debian.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade "pip<25" "setuptools>=64,<74" wheel
	$(PY) -m pip install -q --no-cache-dir -e ".[test,bench,eval]"
	$(PY) tools/offline_nltk.py
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	cd egs/synth_en/asr1 && PATH=$(VENV)/bin:$$PATH ./demo.sh $(DEMO_ARGS)

$(STAMPS)/funasr: $(STAMPS)/venv
	$(PY) -m pip install -q --no-cache-dir --no-deps $(FUNASR_TEST_PKGS)
	@mkdir -p $(STAMPS) && touch $@

test: setup $(STAMPS)/funasr
	PATH=$(VENV)/bin:$$PATH $(PY) -m pytest -q -n 2 --durations=15 tests

bench: setup
	PATH=$(VENV)/bin:$$PATH $(PY) bench/core_ops.py

$(STAMPS)/peers: $(STAMPS)/funasr
	$(PY) -m pip install -q --no-cache-dir -e ".[peers]"
	$(PY) -m pip install -q --no-cache-dir --no-deps pyctcdecode==0.5.0
	@mkdir -p $(STAMPS) && touch $@

peers: setup $(STAMPS)/peers
	PATH=$(VENV)/bin:$$PATH $(PY) bench/peers.py

clean-venv:
	rm -rf $(VENV) $(STAMPS)
