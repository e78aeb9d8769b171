# img2mesh: `make run` installs and runs the example, `make test` installs and runs the tests.
# Both build their own virtual environment in .venv (override with VENV=...).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE ?= assets/chicken.png
OUT ?= out/chicken

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# The normal PyPI build of torch + torchvision (CUDA-enabled, runs on the CPU too).
	$(PY) -m pip install torch torchvision
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/img2mesh run $(EXAMPLE) -o $(OUT) --elevation 30

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/startup.py

clean:
	rm -rf $(VENV) out
