"""The quantization plugin: bytes with scales, error and speed of quantized Linear layers, and 8-bit
optimizer state (claims mem.store_int8, quant.*). See plugins/quantization/plugin.py for what a case
measures and the other modules of the package."""

from plugins.quantization.plugin import QuantizationPlugin

__all__ = ["QuantizationPlugin"]
