"""Other tools' published memory estimators, computed here from their source, for the same inputs.

They estimate model states only (no activations, no temporaries, no allocator), which is why users report
them far off (DeepSpeed#4093: 0.77 GB predicted, ~13 GB seen). Units: bytes per GPU unless stated.

DeepSpeed (github.com/deepspeedai/DeepSpeed):
  deepspeed/runtime/zero/stage_1_and_2.py (commit 02aa38c3), estimate_zero2_model_states_mem_needs, no offload:
      gpu = 2 * total_params + int(18 * total_params / total_gpus)
      ("2 = params_16bit, 18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit + 8_optimizer_states_32bit")
  deepspeed/runtime/zero/stage3.py (commit 007cca6a), estimate_zero3_model_states_mem_needs, no offload:
      gpu = 4 * largest_layer_params + int(18 * total_params / total_gpus)
      largest_layer_params: the most parameters any one module holds itself (model_to_params)
  estimate_zero{2,3}_model_states_mem_needs_all_live(model, num_gpus_per_node, num_nodes) print these
  (total_gpus = num_nodes * num_gpus_per_node) in GiB (bytes / 2**30).
accelerate (github.com/huggingface/accelerate):
  src/accelerate/commands/estimate.py (commit 00e4d264), `accelerate estimate-memory`, column "Training using
  Adam" = max(estimate_training_usage(...).values()) with fp32_size = 4 * params bytes:
      float32: max(model 4P, gradients 4P, optimizer 8P, step 16P) = 16P
      float16 / bfloat16 (mixed precision): max(model 4P, gradients 6P, optimizer 8P, step 8P) = 8P
  one figure for the whole model: no world size, no sharding, batch size 1 (its docstring).
"""

from __future__ import annotations

DEEPSPEED_ZERO2 = "DeepSpeed estimate_zero2_model_states_mem_needs (stage_1_and_2.py @02aa38c3, no offload)"
DEEPSPEED_ZERO3 = "DeepSpeed estimate_zero3_model_states_mem_needs (stage3.py @007cca6a, no offload)"
ACCELERATE = "accelerate estimate-memory, 'Training using Adam' (commands/estimate.py @00e4d264)"


def deepspeed_zero2_bytes(total_params: int, gpus: int) -> int:
    """Per-GPU bytes of DeepSpeed's ZeRO-2 estimator (cpu_offload=False)."""
    return int(2 * total_params + int(18 * total_params / gpus))


def deepspeed_zero3_bytes(total_params: int, largest_layer_params: int, gpus: int) -> int:
    """Per-GPU bytes of DeepSpeed's ZeRO-3 estimator (cpu_offload=False, cpu_offload_params=False)."""
    return int(4 * largest_layer_params + int(18 * total_params / gpus))


def accelerate_training_bytes(total_params: int, precision: str) -> int:
    """accelerate's 'Training using Adam' for the whole model (bytes): 16P fp32, 8P mixed precision."""
    fp32 = 4 * total_params
    if precision == "fp32":
        sizes = {"model": fp32, "gradients": fp32, "optimizer": 2 * fp32, "step": 4 * fp32}
    else:
        sizes = {"model": fp32, "gradients": fp32 + fp32 // 2, "optimizer": 2 * fp32, "step": 2 * fp32}
    return max(sizes.values())


def smallest_gpus(bytes_at: object, budget: float, ladder: list[int]) -> int | None:
    """The smallest world size of `ladder` whose per-GPU estimate `bytes_at(n)` fits `budget` bytes."""
    for n in ladder:
        if bytes_at(n) <= budget:  # type: ignore[operator]
            return n
    return None
