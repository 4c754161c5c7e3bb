# tomosight — set-up, tests and the demo. Every target sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOME_DIR ?= demo_home
# One BLAS/OpenMP thread per process: on 2 cores more threads make torch slower, not faster.
export OMP_NUM_THREADS ?= 1

.PHONY: help setup system-deps test demo bench clean

help:
	@echo "make demo   set up, generate a synthetic DBT cohort, load it, detect and evaluate (FROC)"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  run the benchmarks in bench/"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, as a matched pair (timm needs torchvision to import).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Debian tools the tests use: dciodvfy (dicom3tools) validates the DICOM the generator writes;
# Orthanc with its DICOMweb plugin is the PACS the DICOMweb source is tested against.
system-deps:
	@if ! command -v dciodvfy >/dev/null || ! PATH="$$PATH:/usr/sbin" command -v Orthanc >/dev/null \
	    || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools orthanc orthanc-dicomweb >/dev/null; \
	  else echo "install Debian's dicom3tools orthanc orthanc-dicomweb (the DICOM validity and PACS tests will be skipped)"; fi; \
	fi

test: setup system-deps
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/tomosight demo --home $(HOME_DIR)

bench: setup
	$(PY) bench/bench_dicom.py
	$(PY) bench/bench_froc.py

clean:
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache
