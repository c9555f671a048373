"""gpuplan: how many GPUs a model needs at each ZeRO stage, from the fsdp simulator (plugins/distributed/sim.py).

  plugin.py      the plugin: parameters, grid, validation
  planning.py    one case: each stage's search, simulated (layer extrapolation, checked)
  search.py      the search (lower bound, bisection) and the extrapolation; pure
  answer.py      the summary: the answer table, with DeepSpeed's and accelerate's estimators beside it
  estimators.py  those estimators' published formulas
Model shapes: plugins/common/shapes.py.
"""

from __future__ import annotations

from plugins.planner.plugin import GPUPlanPlugin

__all__ = ["GPUPlanPlugin"]
