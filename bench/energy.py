"""Energy of a timed window on an NVIDIA GPU, from NVML's total-energy counter.

nvmlDeviceGetTotalEnergyConsumption gives the energy (mJ) the device used since the driver was
loaded (Volta and later). Read before and after a window, the difference is the window's energy:
the whole device's, so other work on the GPU counts too (the row says so). Where there is no such
counter (a CPU, an older GPU, no NVML), the reading says why -- never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EnergyMeter:
    """meter = EnergyMeter.open(device); e0 = meter.read(); ...; joules = meter.read() - e0."""

    handle: Any = None
    why: str = ""

    @classmethod
    def open(cls, device: Any) -> EnergyMeter:
        import torch

        dev = torch.device(device)
        if dev.type != "cuda":
            return cls(None, f"no energy counter on {dev.type} (NVML counts GPU energy only)")
        try:
            import pynvml

            pynvml.nvmlInit()
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(h)  # raises NVMLError_NotSupported before Volta
            return cls(h, "")
        except Exception as e:  # NVMLError (no driver, not supported) or pynvml missing
            return cls(None, f"NVML total energy counter not available ({type(e).__name__})")

    @property
    def available(self) -> bool:
        return self.handle is not None

    def read(self) -> float:
        """Joules used by the device since the driver loaded."""
        import pynvml

        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1e3
