# torch-serving: `make serve` sets up and serves the example, `make test` sets
# up and runs every test. Both are idempotent and need no input.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libsimdjson-dev doctest-dev cmake g++ curl wrk
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
NATIVE_SOURCES := $(wildcard ext/*.cpp ext/*.h) setup.py pyproject.toml
CPP_BUILD := cpp-build
HOST ?= 127.0.0.1
PORT ?= 8888

.PHONY: setup serve test test-python test-native bench clean

setup: $(VENV)/.built

$(VENV)/.apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.deps: requirements/dev.txt $(VENV)/.apt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/dev.txt
	@touch $@

# Built against the venv's torch, which the package then pins.
$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

model-example.pt: example/create_model.py $(VENV)/.deps
	$(PY) example/create_model.py $@

serve: setup model-example.pt
	$(VENV)/bin/torch-serving --host $(HOST) --port $(PORT) --model-root .

test: test-native test-python

test-python: setup
	$(PY) -m pytest tests

$(CPP_BUILD)/native_tests: setup CMakeLists.txt $(wildcard tests/native/*)
	cmake -S . -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_BUILD) -j

test-native: $(CPP_BUILD)/native_tests
	ctest --test-dir $(CPP_BUILD) --output-on-failure

$(VENV)/.bench-deps: requirements/bench.txt $(VENV)/.deps
	$(PY) -m pip install -q -r requirements/bench.txt
	@touch $@

# Speed: codec micro-benchmarks against their floors, then the load test
# against the naive server and the framework ceiling. Prints tables.
bench: setup $(VENV)/.bench-deps
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-columns=median,iqr,rounds --benchmark-sort=name
	$(PY) -m benchmarks.load

clean:
	rm -rf $(CPP_BUILD) build *.egg-info torch_serving/*.so model-example.pt
