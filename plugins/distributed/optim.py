"""Mixed-precision AdamW with an fp32 master copy: the optimizer state of the paper's K = 12
(Micikevicius et al. 2017; ZeRO, arXiv 1910.02054, sec. 3.1), for stages 0/1 in bf16."""

from __future__ import annotations

import math
from typing import Any

import torch


class MasterAdamW(torch.optim.Optimizer):
    """AdamW for 16-bit parameters that keeps an fp32 master copy, exp_avg and exp_avg_sq in its
    state (4+4+4 = 12 bytes/param: the paper's K). Each step updates the master copy in fp32 and
    writes it back rounded into the parameter."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0  # a Python int: no tensor
                    st["master"] = p.detach().to(torch.float32, copy=True)
                    st["exp_avg"] = torch.zeros_like(st["master"])
                    st["exp_avg_sq"] = torch.zeros_like(st["master"])
                st["step"] += 1
                t, m, ea, eas = st["step"], st["master"], st["exp_avg"], st["exp_avg_sq"]
                g = p.grad.to(torch.float32)
                m.mul_(1 - lr * wd)  # decoupled weight decay (Loshchilov & Hutter 2019)
                ea.lerp_(g, 1 - b1)
                eas.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (eas.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                m.addcdiv_(ea, denom, value=-lr / (1 - b1**t))
                p.copy_(m)
