"""labkit: the helper package behind the LLM-training lab workbook.

Notebooks in ``labs/`` stay thin; the reusable code lives here, one module per idea.
"""
from labkit.presets import get_preset, use_preset
from labkit.runtime import quiet_third_party

quiet_third_party()

__all__ = ["get_preset", "use_preset"]
__version__ = "0.1.0"
