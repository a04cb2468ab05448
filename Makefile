# Fresh-machine entry points (Python 3.11 + pip are all they need): `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast review benchmark clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install -e ".[test]"
	touch $(STAMP)

# a bundle step: configs/common.json merged with the given overlays, in bundles/patronus_demo
DEMO_RUN = cd bundles/patronus_demo && ../../$(VENV)/bin/python -m monai.bundle run --meta_file configs/metadata.json \
	--logging_file configs/logging.conf --config_file

# main job: the patronus_demo bundle (MNI152 brain slices shipped in nilearn's wheel), trained on CPU
demo: $(STAMP)
	$(DEMO_RUN) "['configs/common.json','configs/train.json']"
	# how the model just trained compares with the shipped one (models/model.pt), on held-out slices
	$(DEMO_RUN) "['configs/common.json','configs/compare.json']"

# pytest exits 5 when it collects no test, which fails this target like any other failure
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

# the developer loop: the tests not marked slow
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

# the clinicians' review notebook, on the demo's shipped pretrained model (registered here in the bundle's MLflow store)
review: $(STAMP)
	$(VENV)/bin/python -m pip install -e ".[notebooks]"
	$(DEMO_RUN) "['configs/common.json','configs/train.json','configs/register_pretrained.json']"
	$(VENV)/bin/jupyter notebook notebooks/prototype_review.ipynb

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
