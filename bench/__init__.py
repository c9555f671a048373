"""bench: a plugin-based benchmarking harness for LLM training and inference building blocks."""

import os as _os

if _os.environ.get("BENCH_KERNELS"):  # the kernel set's variables, before anything loads torch (bench.kernels)
    from bench import kernels as _kernels

    try:
        _kernels.apply()
    except ValueError:  # `bench run` says so; an import never fails on it
        pass

from bench.results import load_frame

__all__ = ["load_frame"]
__version__ = "0.2.0"
