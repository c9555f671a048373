"""The cases of each profile: which shapes are counted, which (budget, shape) runs are trained.

A run serves every fit its D and C fit (plugins/scaling/analysis.py groups by what was trained), so
each plan shares points: the isoFLOP budget C is 6 N_total(shared shape) x D0, which puts the
shared shape's fixed-D run on the isoFLOP profile too (it is not trained twice), and the L(D) size
reuses its fixed-D and isoFLOP runs. N_total at T=64 (plugins/scaling/shapes.py): 1x8 3,448;
1x16 8,432; 1x32 23,008; 2x40 52,320; 2x64 120,576; 3x80 259,280; 4x96 478,272. At T=128 add
64 d position parameters per shape.
"""

from __future__ import annotations

from typing import Any

FLOPS_BIG = "small@256"  # plugins/common/gpt.py PRESETS: the shapes where 6N + 12LdT is within 1%

PLANS: dict[str, dict[str, Any]] = {
    # quick: L(N) from 1-layer models at D0 = 1M tokens (the only sizes that come near convergence at an
    # affordable D: at 400k tokens 1x16..2x64 all sit at 2.2-2.3 nats/byte), an isoFLOP profile of 4 sizes
    # through 1x8's D0 run, L(D) at 1x32 through its D0 and isoFLOP runs, one seed repeat of the cheapest run;
    # ~45 s of single-threaded CPU time on a 2-core Xeon under load (`bench run --plan` for the breakdown)
    "quick": {
        "seq": 64,
        "batch": 16,
        "lr": 3e-3,
        "flops": "1x8+1x32+2x64+3x80+4x128",
        "runs": {
            "D=1e6": "1x8+1x16+1x32",  # L(N)
            "C=2.0688e10": "1x16+1x32+2x40",  # isoFLOP; C = 6 x 3,448 (1x8) x 1e6: 1x8's D0 run is on it
            "D=1e5": "1x32",  # L(D) at 1x32: 100k, its isoFLOP run (150k), 300k, its D0 run (1M)
            "D=3e5": "1x32",
        },
        "repeat": ("D=1e5", "1x32"),  # the cheapest run again with another seed
    },
    # full: three isoFLOP budgets, a wider fixed-D set, five data budgets at 2x64; ~15 minutes on 2 cores
    "full": {
        "seq": 64,
        "batch": 16,
        "lr": 3e-3,
        "flops": "1x8+1x16+1x32+2x40+2x64+3x80+4x96+4x128+6x128+small@256+medium@256+large@512",
        "runs": {
            "D=1.6e6": "1x16+1x32+2x40+2x64+3x80+4x96",  # L(N); 2x64's run is on C=1.1576e12
            "C=3e10": "1x8+1x16+1x32+2x40+2x64",
            "C=1e11": "1x8+1x16+1x32+2x40+2x64+3x80",
            "C=1.1576e12": "1x16+1x32+2x40+3x80+4x96",  # C = 6 x 120,576 (2x64) x 1.6e6
            "D=4e5": "2x64",  # L(D) at 2x64, with D = 1.6e6 and its isoFLOP runs (138k at C=1e11, 41k at 3e10)
            "D=6.4e6": "2x64",
        },
        "repeat": ("C=3e10", "2x64"),
    },
    # gpu: bf16 autocast, batch 128 x 128 tokens; a step of these models is launch-bound (~4 ms assumed), so
    # the plan is sized by steps: ~60 s of an H200 by the plan's cost model (`bench run --profile gpu --plan`)
    "gpu": {
        "seq": 128,
        "batch": 128,
        "lr": 3e-3,
        "flops": "4x128+6x192+8x256+8x384+medium@512+large@1024+1b@2048",
        "runs": {
            "D=6e6": "2x64+3x80+4x128+6x192+8x256",  # L(N)
            "C=9.6e12": "2x40+2x64+4x128",  # C = 6 x 267,472 (3x80 at T=128) x 6e6
            "C=3e13": "3x80+4x128+6x192",
            "D=1.5e6": "3x80",  # L(D) at 3x80 with D = 6e6 and its isoFLOP run
            "D=2e7": "3x80",
        },
        "repeat": ("D=1.5e6", "3x80"),
    },
}


def cases_of(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid of one plan: the flops case, one case per (budget, shape), then the seed repeat.

    Every case sets the same fields, so a flag that overrides them all (--shapes 2x64 --budget C=1e9)
    collapses the grid (duplicates dropped) instead of mixing it with the profile's plan."""
    common = {"seq": plan["seq"], "batch": plan["batch"], "lr": plan["lr"], "repeat": 0}
    cases: list[dict[str, Any]] = [{"what": "flops", "shapes": plan["flops"], "budget": "", **common}]
    for budget, shapes in plan["runs"].items():
        cases += [{"what": "train", "shapes": s, "budget": budget, **common} for s in shapes.split("+")]
    if plan.get("repeat"):
        budget, shape = plan["repeat"]
        cases.append({"what": "train", "shapes": shape, "budget": budget, **{**common, "repeat": 1}})
    return cases
