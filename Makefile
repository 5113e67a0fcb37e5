# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override for a GPU machine, e.g. `make test TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The kernels an AVX2-only CPU (an AMD EPYC, say) runs, forced on any x86 CPU: the numerics tests
# must hold on every CPU this project meets, not only on the one at hand.
AVX2_ONLY := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: install demo test test-isa clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cyclegan demo --output demo

# The OpenVINO tests run in a process of their own: OpenVINO beside the rest of the suite crashed it at exit.
test: $(STAMP)
	$(PY) -m pytest -q -m "not openvino"
	$(PY) -m pytest -q -m openvino

test-isa: $(STAMP)
	$(AVX2_ONLY) $(PY) -m pytest -q -m numerics

clean:
	rm -rf $(VENV) demo build src/*.egg-info .pytest_cache
