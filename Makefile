# pappus: two commands set everything up on a fresh Debian machine.
#   make demo   the main job: the thesis workloads on the CPU backend, checked against numpy
#   make test   everything the tests need (Debian packages too, when root), then the fast suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
JOBS   ?= auto
# Debian packages: the ROCm 5.2 toolchain and runtime (real code objects, real no-device
# answers), libseccomp (the CPU sandbox) and a C compiler (the CPU backend's kernels).
DEB_PACKAGES = hipcc libamdhip64-dev libhsa-runtime-dev libhsa-runtime64-1 rocminfo \
               libseccomp-dev libseccomp2 g++ make

.PHONY: demo test test-all venv deps-system lint type docs bench security-long conformance clean help

help:
	@echo "make demo           run the demo (thesis workloads on the CPU backend)"
	@echo "make test           install what the tests need and run the fast suite"
	@echo "make test-all       the fast suite plus the slow tests"
	@echo "make conformance    the conformance suite against the CPU backend, with reports"
	@echo "make security-long  the long security profile (10,000+ fuzzed configs, fault storms)"
	@echo "make bench          the benchmarks (benchmarks/), figures into out/bench"
	@echo "make lint | type | docs"

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# cuobjdump/nvdisasm (the scrub kernels' machine-code checks) and NVRTC (builds without nvcc)
# run without a GPU, so the CUDA backend's tests of them run here too.
$(VENV)/.installed: $(VENV)/.created pyproject.toml Makefile
	$(PIP) install -q -e '.[dev,serve,cuda,docs,ray]' nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm nvidia-cuda-nvrtc
	touch $@

$(VENV)/.installed-hip: $(VENV)/.installed
	-$(PIP) install -q 'hip-python>=6.2' && touch $@

venv: $(VENV)/.installed

deps-system:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping Debian packages (tests that need them skip with the reason)"; fi

demo: $(VENV)/.installed
	$(VENV)/bin/pappus demo

test: deps-system $(VENV)/.installed $(VENV)/.installed-hip
	$(PY) -m pytest -n $(JOBS) -q tests security_tests -m "not slow"

test-all: deps-system $(VENV)/.installed $(VENV)/.installed-hip
	$(PY) -m pytest -n $(JOBS) -q tests security_tests

conformance: $(VENV)/.installed
	$(VENV)/bin/pappus conformance --backend cpu --report out/conformance

security-long: deps-system $(VENV)/.installed
	PAPPUS_SECURITY_PROFILE=long $(PY) -m pytest -n $(JOBS) -q security_tests

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py --out out/bench

lint: $(VENV)/.installed
	$(PY) -m ruff check core plugins conformance tests security_tests benchmarks

type: $(VENV)/.installed
	$(PY) -m mypy

docs: $(VENV)/.installed
	$(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) build dist out site .pytest_cache .hypothesis
