# EchoSeg: the two commands a newcomer needs are `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_CPU_PIN := torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL ?= models/default

ASYNCAPI_TOOLS := tools/asyncapi/node_modules/.installed
OHIF_SEG_TOOLS := tools/ohif-seg/node_modules/.installed
OPENAPI_TS_TOOLS := tools/openapi-ts/node_modules/.installed

.PHONY: venv install serve test lint format bench image clean

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# Without a GPU install the pinned CPU build of torch first; the project's
	@# torch range is then already satisfied and no CUDA build is downloaded. The extra
	@# picks one ONNX Runtime wheel: `cpu` (onnxruntime) or `gpu` (onnxruntime-gpu + TensorRT).
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: torch from the project's range, the gpu extra"; \
		$(PIP) install -q -e '.[gpu,dev]'; \
	else \
		echo "no GPU: installing $(TORCH_CPU_PIN) (CPU build) and the cpu extra"; \
		$(PIP) install -q $(TORCH_CPU_PIN); \
		$(PIP) install -q -e '.[cpu,dev]'; \
	fi
	touch $@

# The AsyncAPI project's parser validates docs/asyncapi.yaml in the tests (npm, from the registry).
$(ASYNCAPI_TOOLS): tools/asyncapi/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tools/asyncapi --no-audit --no-fund --silent && touch $@; \
	else \
		echo "npm not found: the AsyncAPI validation test will skip"; \
	fi

# The OHIF v3 viewer's SEG loader (@cornerstonejs/adapters) reads our DICOM SEG in the tests (npm).
$(OHIF_SEG_TOOLS): tools/ohif-seg/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tools/ohif-seg --no-audit --no-fund --silent && touch $@; \
	else \
		echo "npm not found: the OHIF SEG loading test will skip"; \
	fi

# A TypeScript client generated from docs/openapi.json (openapi-typescript + openapi-fetch, tsc) runs
# against a live server in the tests (npm).
$(OPENAPI_TS_TOOLS): tools/openapi-ts/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tools/openapi-ts --no-audit --no-fund --silent && touch $@; \
	else \
		echo "npm not found: the generated TypeScript client test will skip"; \
	fi

venv install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/echoseg serve --model $(MODEL) --host $(HOST) --port $(PORT) --backend onnxruntime --device cpu

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(VENV)/.installed $(ASYNCAPI_TOOLS) $(OHIF_SEG_TOOLS) $(OPENAPI_TS_TOOLS) lint
	$(VENV)/bin/pytest -q

bench: $(VENV)/.installed
	$(PY) -m benchmarks.run_all

# The CPU image (deploy/Dockerfile.cpu) with podman or docker; prints build time and image size.
# With .venv set up (make venv), its torch exports the model and the build installs no torch.
image: $(VENV)/.installed
	deploy/build-local.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
