# torch-serving: `make serve` sets up and serves the example, `make test` sets
# up and runs every test. Both are idempotent and need no input.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libgrpc++-dev pkg-config libsimdjson-dev libturbojpeg0-dev libpng-dev libwebp-dev doctest-dev cmake g++ curl wrk
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
NATIVE_SOURCES := $(wildcard ext/*.cpp ext/*.h) ext/sources.txt setup.py pyproject.toml
CPP_BUILD := cpp-build
HOST ?= 127.0.0.1
PORT ?= 8888
GRPC_PORT ?= 8001
# The example models `make serve` serves: a folder of their own, not the repository.
MODELS := models

.PHONY: setup serve test test-python test-native bench fuzz soak sanitize clean

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

$(MODELS)/model-example.pt: example/create_model.py $(VENV)/.deps
	@mkdir -p $(MODELS)
	$(PY) example/create_model.py $@

$(MODELS)/scale.pt $(MODELS)/greeter.pt &: example/create_v2_models.py $(VENV)/.deps
	@mkdir -p $(MODELS)
	$(PY) example/create_v2_models.py $(MODELS)

$(MODELS)/classifier.pt $(MODELS)/picture.jpg &: example/create_image_model.py $(VENV)/.deps
	@mkdir -p $(MODELS)
	$(PY) example/create_image_model.py $(MODELS)

# AOTInductor packages: a compile each, tens of seconds.
$(MODELS)/model-example.pt2 $(MODELS)/classifier.pt2 &: example/create_pt2_model.py example/create_model.py example/create_image_model.py $(VENV)/.built
	@mkdir -p $(MODELS)
	$(PY) example/create_pt2_model.py $(MODELS)

EXAMPLE_MODELS := $(addprefix $(MODELS)/,model-example.pt scale.pt greeter.pt classifier.pt picture.jpg model-example.pt2 classifier.pt2)

serve: setup $(EXAMPLE_MODELS)
	$(VENV)/bin/torch-serving --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT) --model-root $(MODELS)

test: test-native test-python

# tests/grpc in a pytest of its own: tritonclient.grpc and KServe's SDK cannot share a process.
test-python: setup
	$(PY) -m pytest tests
	$(PY) -m pytest tests/grpc

$(CPP_BUILD)/native_tests: setup CMakeLists.txt $(wildcard tests/native/*)
	cmake -S . -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_BUILD) -j

test-native: $(CPP_BUILD)/native_tests
	ctest --test-dir $(CPP_BUILD) --output-on-failure

# torch stays pinned: the peers' packages must not replace it.
$(VENV)/.bench-deps: requirements/bench.txt $(VENV)/.deps
	@dpkg -s openjdk-17-jre-headless >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless)
	$(PY) -m pip install -q -r requirements/bench.txt "$$(grep -m1 '^torch==' requirements/dev.txt)"
	@touch $@

# Speed: codec micro-benchmarks against their floors, then the load test
# against the naive server and the framework ceiling. Prints tables.
bench: setup $(VENV)/.bench-deps
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-columns=median,iqr,rounds --benchmark-sort=name
	$(PY) -m benchmarks.pt2
	$(PY) -m benchmarks.in_process
	$(PY) -m benchmarks.load
	$(PY) -m benchmarks.load --workloads tiny,tiny-64,tiny-1024,tiny-16384,tiny-262144,jpeg,jpeg-means --wrk-threads 2
	$(PY) -m benchmarks.settings --settings 2x4x1,2x4x1/metrics-off --workloads tiny --wrk-threads 2 --rounds 5
	$(PY) -m benchmarks.peers
	$(PY) -m benchmarks.grpc

$(VENV)/.fuzz-deps: requirements/fuzz.txt $(VENV)/.deps
	$(PY) -m pip install -q -r requirements/fuzz.txt
	@touch $@

# Fuzz the decoder, the whole /serve request path and the V2 inference path,
# FUZZ_SECONDS each, from the seed corpora; new inputs and crash reproducers
# land in .fuzz/.
FUZZ_SECONDS ?= 60
fuzz: setup $(VENV)/.fuzz-deps
	@for target in decode request v2; do \
	  corpus=tests/fuzz/corpus; [ $$target = v2 ] && corpus=tests/fuzz/corpus_v2; \
	  mkdir -p .fuzz/$$target; \
	  echo "fuzzing $$target for $(FUZZ_SECONDS)s"; \
	  PYTHONPATH=. $(PY) tests/fuzz/fuzz_$$target.py .fuzz/$$target $$corpus \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=.fuzz/ -print_final_stats=1 2>&1 \
	    | grep -E "^stat::number_of_executed_units|^Done|ERROR|Error|Traceback" ; \
	  if ls .fuzz/crash-* >/dev/null 2>&1; then echo "crash reproducers in .fuzz/"; exit 1; fi; \
	done

# Tens of thousands of requests over more models than the cache holds,
# every answer checked, RSS sampled: it must plateau.
soak: setup
	$(PY) -m benchmarks.soak

# ASan + UBSan: the native unit tests, then the codec, cache, V2 and image tests against
# a sanitized build of the extension (in a scratch copy of the tree).
SANITIZE_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0
sanitize: setup
	cmake -S . -B cpp-build-asan -DCMAKE_BUILD_TYPE=Debug -DTORCH_SERVING_SANITIZE=ON \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build cpp-build-asan -j
	ASAN_OPTIONS=detect_leaks=0 cpp-build-asan/native_tests
	rm -rf .sanitize && mkdir .sanitize && git ls-files -z | xargs -0 cp --parents -t .sanitize
	cd .sanitize && TORCH_SERVING_SANITIZE=1 ../$(PY) setup.py -q build_ext --inplace
	cd .sanitize && $(SANITIZE_ENV) ../$(PY) -m pytest tests/unit/test_serve_codec.py tests/unit/test_cache.py tests/unit/test_v2.py tests/unit/test_image.py -q -p no:cacheprovider

clean:
	rm -rf $(CPP_BUILD) cpp-build-asan .sanitize .fuzz build *.egg-info torch_serving/*.so $(MODELS) .cache
