# Set-up and main entry points. `make test` and `make run` work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
STUDY_DIR ?= runs/study-quick

.PHONY: install data test run lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Fashion-MNIST offline, from Debian's package (as root); otherwise effnet falls back to a download.
data:
	@if [ ! -e $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; \
	fi

# The main job: the paper's scaling study at proxy scale (quick preset, about 15 min on 2 cores).
run: $(STAMP) data
	$(BIN)/effnet study --preset quick --output $(STUDY_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
