"""bench: a plugin-based benchmarking harness for LLM training and inference building blocks."""

from bench.results import load_frame

__all__ = ["load_frame"]
__version__ = "0.2.0"
