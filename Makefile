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
# The CI gate's committed baseline: the quick suite on CPU, one thread, the portable kernel set, fixed
# sizes (see `make baseline`, which records it with the same GATE_RUN).
BASELINE ?= results/baseline/quick-cpu.jsonl
# --kernels portable: ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE (bench/kernels.py),
# so fixed-seed losses are the same on every x86-64 host; --fixed-sizes: no size probes, the same rows everywhere.
GATE_RUN = run --all --profile quick --device cpu --threads 1 --kernels portable --fixed-sizes --format none
# Portable metrics (bytes, FLOP and parameter counts, formulas) gate against BASELINE on any machine,
# integers exactly, floats within rel 1e-6. Machine-bound ones (`portable: false`: losses after many
# steps, overflow counts; and measured floats without a count unit) follow the kernels: they gate against
# BASELINE where the run's numerics_id (torch/MKL/oneDNN versions + the pinned kernel set) is the
# baseline's, i.e. on any x86-64 host with this torch build; elsewhere against this numerics class's
# file under MACHINE_BASELINES (recorded by the first gate run in a checkout; CI commits nothing, so
# there they are reported "not compared" unless the file is committed).
MACHINE_BASELINES ?= results/machine-baselines
GATE_TOL ?=

.PHONY: install bench test test-long test-nodes gate gate-ab baseline bench-overhead timing-agreement gate-power clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,quant]"
	touch $@

# The default suite on whatever device is here (quick profile on CPU, gpu profile with CUDA),
# then every documented claim with its verdict.
bench: $(STAMP)
	@start=$$(date +%s); $(BIN)/bench run --all --out $(RUN_FILE) && $(BIN)/bench claims $(RUN_FILE); rc=$$?; \
	    echo "make bench: $$(( $$(date +%s) - start )) s wall time in all ($$(nproc) cores; results: $(RUN_FILE))"; exit $$rc

# The test suite, with the habits checked first: ruff (format and lint) on the tree, mypy on bench/.
# Two pytest workers (pytest-xdist; tests dealt one by one, a file with costly module fixtures kept on
# one worker by its xdist_group): most time is in subprocesses
# (`bench run`, torchrun), which two cores run side by side; under 5 minutes on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not nodes and not long"

# The long checks against reality outside the project, minutes each, so apart from make test's 5 minutes:
# torchtitan's published memory (8B-scale simulations), the gate on an emulated foreign host (pinned
# kernels), an A/B gate over two real revisions. CI runs them after make test.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m long

# Several nodes on real engines (root): two hosts in network namespaces and a real SLURM cluster over
# them (scripts/nodes_env.sh; tests/test_nodes_real.py). CI (.ci/run) installs slurm-wlm and munge first.
test-nodes: $(STAMP)
	$(BIN)/python -m pytest -q -m nodes tests/test_nodes_real.py -s -p no:xdist; rc=$$?; scripts/nodes_env.sh down; exit $$rc

# CI regression gate: the quick suite's deterministic metrics (bytes, FLOPs, fixed-seed losses),
# portable and machine-bound parts reported apart. Exit 0 pass, 1 regression, 2 ambiguous/missing rows, 3 error.
gate: $(STAMP)
	$(BIN)/bench $(GATE_RUN) --out $(GATE_FILE)
	$(BIN)/bench regress --baseline $(BASELINE) --current $(GATE_FILE) --only deterministic \
	    --machine-baselines $(MACHINE_BASELINES) $(GATE_TOL)

# The optional second stage: did the last commit slow a case down? AB_REV (default HEAD~1) and this working
# tree run interleaved on this machine, the timings gated on A/B pairs (`bench regress --ab`; README).
# Bounded by AB_DEADLINE seconds; AB_CASES: the cases, as `bench run` flags.
AB_REV ?= HEAD~1
AB_DEADLINE ?= 900
AB_CASES ?= --plugin attention --impl sdpa_math --seq 256 --heads 4 --dtype fp32 --mode fwd --causal false
gate-ab: $(STAMP)
	$(BIN)/bench regress --ab $(AB_REV) $(AB_CASES) --threads 1 --pairs 8 --deadline $(AB_DEADLINE)

# Re-record the baseline (after an intended change of a deterministic figure; commit the file).
# Machine-class files recorded against the old baseline are stale: removed (each class records anew).
baseline: $(STAMP)
	rm -f $(BASELINE) && mkdir -p $(dir $(BASELINE))
	rm -f $(MACHINE_BASELINES)/*.jsonl
	$(BIN)/bench $(GATE_RUN) --out $(BASELINE)

# The gate's power on this machine: A/A false alarms and the slowdown it catches (prints figures),
# the A/B mode (`bench regress --ab`) beside the current one, trial by trial under the same load.
gate-power: $(STAMP)
	$(BIN)/python benchmarks/gate_power.py --interleaved

# The harness's own overhead per case (pytest-benchmark table) and timer agreement vs torch.utils.benchmark.
bench-overhead: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_bench_overhead.py -k overhead --benchmark-enable --benchmark-columns=min,median,mean,stddev,rounds

timing-agreement: $(STAMP)
	$(BIN)/python benchmarks/timing_agreement.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
