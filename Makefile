# The two commands of the README: `make bench` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch: reuse one that is importable (GPU machines bring their own CUDA build);
# otherwise the CPU build 2.13.0 (a bare `torch` requirement may pull a multi-GB CUDA build).
TORCH_PIN ?= torch==2.13.0
RUN_FILE ?= results/runs/make-bench-$(shell date +%Y%m%d-%H%M%S).jsonl
GATE_FILE ?= results/runs/gate-$(shell date +%Y%m%d-%H%M%S).jsonl
# The CI gate's committed baseline: the quick suite on CPU, one thread (see `make baseline`).
BASELINE ?= results/baseline/quick-cpu.jsonl
GATE_RUN = run --all --profile quick --device cpu --threads 1 --format none
# Bytes, FLOPs and counts compare exactly, other deterministic floats within 1e-4. Losses after
# training within 1%: two runs here were bit-identical, but BLAS picks kernels by CPU ISA and
# 150 training steps amplify last-bit differences on another CPU model.
GATE_LOSSES = loss final_loss final_loss_fp32 final_loss_bf16 final_loss_fp16 final_loss_fp16_scaler \
              first_loss train_loss train_loss_last
GATE_TOL ?= --rtol 1e-4 $(foreach m,$(GATE_LOSSES),--tol $(m)=1e-2)

.PHONY: install bench test gate baseline bench-overhead timing-agreement gate-power clean

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

# CI regression gate: the quick suite's deterministic metrics (bytes, FLOPs, fixed-seed losses)
# against the committed baseline. Exit 0 pass, 1 regression, 2 ambiguous/missing rows, 3 error.
gate: $(STAMP)
	$(BIN)/bench $(GATE_RUN) --out $(GATE_FILE)
	$(BIN)/bench regress --baseline $(BASELINE) --current $(GATE_FILE) --only deterministic $(GATE_TOL)

# Re-record the baseline (after an intended change of a deterministic figure; commit the file).
baseline: $(STAMP)
	rm -f $(BASELINE) && mkdir -p $(dir $(BASELINE))
	$(BIN)/bench $(GATE_RUN) --out $(BASELINE)

# The gate's power on this machine: A/A false alarms and the slowdown it catches (prints figures).
gate-power: $(STAMP)
	$(BIN)/python benchmarks/gate_power.py

# The harness's own overhead per case (pytest-benchmark table) and timer agreement vs torch.utils.benchmark.
bench-overhead: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_bench_overhead.py -k overhead --benchmark-enable --benchmark-columns=min,median,mean,stddev,rounds

timing-agreement: $(STAMP)
	$(BIN)/python benchmarks/timing_agreement.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
