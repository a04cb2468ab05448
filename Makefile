# Fresh-machine entry points (Python 3.11 + pip are all they need): `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-test

.PHONY: demo test benchmark clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install -e ".[test]"
	touch $(STAMP)

# main job: train a tiny Patronus on real digits (shipped with scikit-learn), sample, invert, reconstruct
demo: $(STAMP)
	$(VENV)/bin/python -m monai_patronus.demo --output-dir demo_output

# pytest exits 5 when it collects no test, which fails this target like any other failure
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
