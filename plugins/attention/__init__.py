"""The attention plugin: naive attention vs the SDPA backends vs FlexAttention (claims attn.*).
See plugins/attention/plugin.py for what a case measures and the other modules of the package."""

from plugins.attention.plugin import AttentionPlugin

__all__ = ["AttentionPlugin"]
