"""The precision plugin (entry point `plugins.precision:PrecisionPlugin`): see plugins/precision/plugin.py."""

from plugins.precision.plugin import PrecisionPlugin

__all__ = ["PrecisionPlugin"]
