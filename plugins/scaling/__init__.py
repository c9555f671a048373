"""Compute and scaling laws on small GPTs trained on real text (entry point plugins.scaling:ScalingPlugin).

plugin.py    the Plugin: parameters, grid, launch, estimates, run / summarize / report dispatch
plans.py     the cases of each profile (quick, full, gpu)
shapes.py    shape names -> GPTConfig, parameter counts, budgets -> batch x steps
flops.py     counted FLOPs vs 6N + 12LdT; judgement of compute.6nd across shapes
train.py     one training run and its validation loss
fit.py       power laws, irreducible-term fits, isoFLOP parabolas, the compute frontier (numpy/scipy)
analysis.py  which runs form L(N), L(D), L(C) and each isoFLOP profile; their fits
summary.py   summary rows and claim evidence
claims.py    the claims judged, their published figures and arithmetic
report.py    the report section (plots into the folder `bench report` gives)
"""

from plugins.scaling.plugin import ScalingParams, ScalingPlugin

__all__ = ["ScalingParams", "ScalingPlugin"]
