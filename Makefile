# tomosight — set-up, tests and the demo. Every target sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOME_DIR ?= demo_home
# One BLAS/OpenMP thread per process: on 2 cores more threads make torch slower, not faster.
export OMP_NUM_THREADS ?= 1

.PHONY: help setup system-deps checkov test demo serve ui bench clean

help:
	@echo "make demo   set up, generate a synthetic DBT cohort, load it, detect and evaluate (FROC)"
	@echo "make test   set up and run the whole test suite"
	@echo "make serve the clinician endpoint over the demo's model on http://127.0.0.1:8000 (OIDC_* set, or SERVE_ARGS=--insecure-no-auth)"
	@echo "make ui     set up and open the Dagster UI on http://127.0.0.1:3000 (home: $(HOME_DIR))"
	@echo "make bench  run the benchmarks in bench/"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, as a matched pair (timm needs torchvision to import).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Debian tools the tests use: dciodvfy (dicom3tools) validates the DICOM the generator writes;
# Orthanc with its DICOMweb plugin is the PACS the DICOMweb source is tested against;
# headless Chromium looks at the Dagster UI.
system-deps:
	@if ! command -v dciodvfy >/dev/null || ! PATH="$$PATH:/usr/sbin" command -v Orthanc >/dev/null \
	    || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools orthanc orthanc-dicomweb chromium >/dev/null; \
	  else echo "install Debian's dicom3tools orthanc orthanc-dicomweb chromium (the DICOM validity, PACS and UI tests will be skipped)"; fi; \
	fi

# checkov (Terraform static analysis, tests/test_deployment_terraform.py) in a venv of its own:
# its pins conflict with the project's.
$(VENV)-checkov/.installed:
	$(PYTHON) -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/pip install -q checkov==3.3.30
	touch $@

checkov: $(VENV)-checkov/.installed

test: setup system-deps checkov
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: setup
	$(VENV)/bin/tomosight demo --home $(HOME_DIR)

# The clinician endpoint (LitServe) over the champion that `make demo` registered. Production needs
# OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URL; on a laptop SERVE_ARGS=--insecure-no-auth (127.0.0.1 only).
SERVE_ARGS ?=
serve: setup
	$(VENV)/bin/tomosight serve --home $(HOME_DIR) $(SERVE_ARGS)

# The Dagster UI over the home folder's instance (runs of `tomosight materialize --home $(HOME_DIR)` show up there).
ui: setup
	mkdir -p $(HOME_DIR)/dagster
	@[ -e $(HOME_DIR)/dagster/dagster.yaml ] \
	  || printf 'telemetry: {enabled: false}\nnux: {enabled: false}\n' > $(HOME_DIR)/dagster/dagster.yaml
	TOMOSIGHT_HOME=$(HOME_DIR) DAGSTER_HOME=$(abspath $(HOME_DIR))/dagster $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup
	$(PY) bench/bench_dicom.py
	$(PY) bench/bench_froc.py
	$(PY) bench/train_throughput.py
	$(PY) bench/serve_load.py

clean:
	rm -rf $(VENV) $(VENV)-checkov $(HOME_DIR) .pytest_cache
