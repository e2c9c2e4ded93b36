# All targets set themselves up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export WANDB_SILENT := true

.PHONY: install chromium lint test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,all]'
	touch $(STAMP)

install: $(STAMP)

chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint chromium
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -ra

demo: install
	WANDB_MODE=offline $(BIN)/rareseg fit --config configs/wetlands.yaml --config configs/demo-cpu.yaml --test_after_fit true

bench: install
	cd benchmarks && for script in datamodule.py "model.py --threads 1" optim.py inference.py; do \
		../$(BIN)/python $$script || exit 1; done
	$(BIN)/rareseg bench ablation --seeds 3 --budget cpu-small

clean:
	rm -rf $(VENV) runs wandb lightning_logs
