"""DDP and ZeRO stages 1-3 (ZeroRedundancyOptimizer, FSDP2): per-rank model-state bytes, peak memory, step
time, collective bytes and loss of a real GPT training step, checked against the ZeRO formulas
(Rajbhandari et al. 2019, arXiv 1910.02054, sec. 3.1, Figure 1); simulated at sizes no machine here has.

Entry points: `plugins.distributed:DDPPlugin` (plain DDP) and `plugins.distributed:FSDPPlugin`
(--stage 0|1|2|3, --hybrid). The package, one topic per module:
  params.py      the case parameters; stage_of / hybrid_of; the GPT a real run trains
  formulas.py    the ZeRO formulas (per-rank bytes, reductions, limits, the allowed deviation)
  optim.py       MasterAdamW (fp32 master weights: the paper's K = 12)
  strategies.py  stage -> torch (DDP, ZeroRedundancyOptimizer, FSDP2, HSDP), building one
  training.py    one training run and what it measures on a rank
  comm.py        counting the bytes torch.distributed's collectives move
  sim.py         --simulate: fake process group + fake tensors (rank0.py: simulating rank 0 only)
  summary.py     per-case summary (largest / slowest rank, vs DDP, weak scaling, simulated twin)
  evidence.py    claim evidence across cases
  claims.py      the claims these plugins judge
  report.py      the report sections
  plugin.py      DDPPlugin, FSDPPlugin
"""

from __future__ import annotations

from plugins.distributed.plugin import DDPPlugin, FSDPPlugin

__all__ = ["DDPPlugin", "FSDPPlugin"]
