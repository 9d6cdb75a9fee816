# `make demo` and `make test` create .venv when it is missing and install everything they need,
# at the versions of the lock (constraints.txt) the suite last passed with.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := constraints.txt
# torch and torchvision come from this machine's disk (a CUDA build that runs on the CPU).
TORCH := torch==2.14.1 torchvision==0.29.1
PIP := pip install --quiet --disable-pip-version-check

.PHONY: demo test test-latest test-range lock lint bench clean lmms-venv

# lmms-eval for the plugin tests (tests/test_lmms.py): .venv-lmms, layered on .venv, built once
# by .ci/lmms-venv at the versions of its lock; rebuilt when pyproject or that lock changes.
LMMS_STAMP := .venv-lmms/.installed

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/$(PIP) -c $(LOCK) $(TORCH)
	$(BIN)/$(PIP) -c $(LOCK) -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vistoken demo

$(LMMS_STAMP): $(STAMP) pyproject.toml .ci/lmms-constraints.txt
	.ci/lmms-venv

lmms-venv: $(LMMS_STAMP)

test: $(STAMP) $(LMMS_STAMP)
	$(BIN)/python -m pytest

# The model-integration tests again on the oldest and the newest transformers release of the
# tested range (vistoken/models/_hf.py TESTED; pyproject's bound), each in its own venv.
test-range: $(STAMP)
	.ci/transformers-venv oldest
	.ci/transformers-venv newest

# The whole suite on the newest releases pyproject allows (no lock), in .venv-latest.
test-latest: $(LMMS_STAMP)
	test -x .venv-latest/bin/python || $(PY) -m venv .venv-latest
	.venv-latest/bin/$(PIP) --upgrade $(TORCH)
	.venv-latest/bin/$(PIP) --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pip freeze --exclude-editable | grep -iE '^(transformers|numpy|av|pillow)=='
	.venv-latest/bin/python -m pytest

# Rewrite the lock from .venv after a green `make test` (or from .venv-latest: LOCK_FROM=...).
LOCK_FROM ?= $(VENV)
lock:
	{ echo "# The versions the suite last passed with; make demo/test install these."; \
	  echo "# Regenerate: make lock (after a green run). See README 'Versions'."; \
	  $(LOCK_FROM)/bin/python -m pip freeze --exclude-editable; } > $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check vistoken tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_scc.py

clean:
	rm -rf $(VENV) .venv-latest .venv-tf-* .venv-lmms vistoken-demo
