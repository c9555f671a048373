# The two commands of the README: `make bench` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch: reuse one that is importable (GPU machines bring their own CUDA build);
# otherwise the CPU build 2.13.0 (a bare `torch` requirement may pull a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
RUN_FILE ?= results/runs/make-bench-$(shell date +%Y%m%d-%H%M%S).jsonl
# Idle OpenMP threads sleep instead of spinning (tests run ranks side by side on 2 cores).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install bench test gate bench-overhead timing-agreement clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,quant]"
	touch $@

# The default suite on whatever device is here (quick profile on CPU, gpu profile with CUDA),
# then every documented claim with its verdict.
bench: $(STAMP)
	$(BIN)/bench run --all --out $(RUN_FILE)
	$(BIN)/bench claims $(RUN_FILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The harness's own overhead per case (pytest-benchmark table) and timer agreement vs torch.utils.benchmark.
bench-overhead: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_bench_overhead.py -k overhead --benchmark-enable --benchmark-columns=min,median,mean,stddev,rounds

timing-agreement: $(STAMP)
	$(BIN)/python benchmarks/timing_agreement.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
