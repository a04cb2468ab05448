# Fresh-machine entry points (Python 3.11 + pip are all they need): `make demo`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-test

.PHONY: demo test review benchmark clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install -e ".[test]"
	touch $(STAMP)

# main job: the patronus_demo bundle (MNI152 brain slices shipped in nilearn's wheel), trained on CPU
demo: $(STAMP)
	cd bundles/patronus_demo && ../../$(VENV)/bin/python -m monai.bundle run \
		--config_file configs/train.json --meta_file configs/metadata.json --logging_file configs/logging.conf
	# how the model just trained compares with the shipped one (models/model.pt), on held-out slices
	cd bundles/patronus_demo && ../../$(VENV)/bin/python -m monai.bundle run \
		--config_file "['configs/train.json','configs/compare.json']" --meta_file configs/metadata.json \
		--logging_file configs/logging.conf

# pytest exits 5 when it collects no test, which fails this target like any other failure
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

# the clinicians' review notebook, on the demo's shipped pretrained model (registered here in the bundle's MLflow store)
review: $(STAMP)
	$(VENV)/bin/python -m pip install -e ".[notebooks]"
	cd bundles/patronus_demo && ../../$(VENV)/bin/python -m monai.bundle run \
		--config_file "['configs/train.json','configs/register_pretrained.json']" --meta_file configs/metadata.json \
		--logging_file configs/logging.conf
	$(VENV)/bin/jupyter notebook notebooks/prototype_review.ipynb

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
