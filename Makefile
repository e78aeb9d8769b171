# img2mesh: `make run` installs and runs the example, `make test` installs, lints, tests and checks the wheel.
# Both build their own virtual environment in .venv (override with VENV=...).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE ?= assets/chicken.png
OUT ?= out/chicken

.PHONY: install run test bench docs gpu-check wheelhouse device-wheels clean

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

# Lint, the test suite, then the built wheel installed on its own and run (tools/wheel_check.sh).
test: $(STAMP)
	$(VENV)/bin/ruff check img2mesh tests benchmarks tools
	$(PY) -m pytest
	VENV=$(VENV) bash tools/wheel_check.sh

bench: $(STAMP)
	$(PY) benchmarks/startup.py

# docs/configuration.md is generated from the schema (a test fails when it is stale).
docs: $(STAMP)
	$(VENV)/bin/img2mesh config --reference > docs/configuration.md

# On a machine with a CUDA GPU: the gpu tests, timed generation, GSO reconstructions and one
# end-to-end run, ending with one markdown table (logs in gpu-check/, or $$OUT).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

# Every wheel img2mesh needs (torch excluded) into wheelhouse/, for offline machines:
# make wheelhouse WHEEL_PYTHON=3.12 WHEEL_PLATFORM=manylinux_2_28_x86_64
WHEEL_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEEL_PLATFORM ?=
wheelhouse: $(STAMP)
	$(PY) tools/wheelhouse.py --out wheelhouse --python-version $(WHEEL_PYTHON) $(if $(WHEEL_PLATFORM),--platform $(WHEEL_PLATFORM))

# What a lent GPU machine (Python 3.12 with torch, transformers, numpy, ...; no network) lacks for
# `tools/device_check.sh`: about 15 MiB of wheels in .device-wheels/.
DEVICE_WHEELS := diffusers importlib_metadata zipp trimesh PyMCubes xatlas fast-simplification nerfacc kornia kornia_rs
device-wheels: $(STAMP)
	rm -rf .device-wheels
	$(PY) tools/wheelhouse.py --out .device-wheels --python-version 3.12 --only $(DEVICE_WHEELS)

clean:
	rm -rf $(VENV) out gpu-check wheelhouse
