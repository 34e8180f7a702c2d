# Set-up and the two everyday jobs. `make demo` and `make test` create .venv and install what is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Pins for this project's machines: torch and torchvision install from local disk here, and OpenCV 4.x
# still has the darknet reader the darknet-import tests compare against. The package itself asks for ranges.
MACHINE_PINS := torch==2.14.1 torchvision==0.29.1 opencv-python==4.14.0.94 opencv-python-headless==4.14.0.94

.PHONY: install demo test clean
install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(MACHINE_PINS)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench,nir]' $(MACHINE_PINS)
	touch $@

demo: install
	$(VENV)/bin/spikedet demo

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs data/shapes
