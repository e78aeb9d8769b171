# img2mesh: `make run` installs and runs the example, `make test` installs, lints, tests and checks the wheel.
# Both build their own virtual environment in .venv (override with VENV=...).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXAMPLE ?= assets/chicken.png
OUT ?= out/chicken

DEV_STAMP := $(VENV)/.installed-dev
# TORCH_INDEX=https://download.pytorch.org/whl/cpu make install: PyTorch's CPU-only wheels on a machine
# without a GPU (a fraction of the CUDA build's size); empty: PyPI's build (CUDA-enabled, runs on a CPU too).
TORCH_INDEX ?=

.PHONY: install run demo test bench docs gpu-check wheelhouse device-wheels clean

# What a user needs: torch, torchvision and img2mesh (editable); the test tools only with `make test`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch torchvision $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[dev]'
	touch $(DEV_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/img2mesh run $(EXAMPLE) -o $(OUT) --elevation 30

# The whole pipeline in about a minute with tiny untrained networks: noise, but every stage and the report.
demo: $(STAMP)
	$(VENV)/bin/img2mesh run $(EXAMPLE) -o out/demo --preset demo

# Lint, the test suite, then the built wheel installed on its own and run (tools/wheel_check.sh).
test: $(DEV_STAMP)
	$(VENV)/bin/ruff check img2mesh tests benchmarks tools
	$(PY) -m pytest
	VENV=$(VENV) bash tools/wheel_check.sh

bench: $(DEV_STAMP)
	$(PY) benchmarks/startup.py

# docs/configuration.md is generated from the schema (a test fails when it is stale).
docs: $(STAMP)
	$(VENV)/bin/img2mesh config --reference > docs/configuration.md

# On a machine with a CUDA GPU: the gpu tests, timed generation, GSO reconstructions and one
# end-to-end run, ending with one markdown table (logs in gpu-check/, or $$OUT).
gpu-check: $(DEV_STAMP)
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
