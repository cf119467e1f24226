"""labkit: the helper package behind the LLM-training lab workbook.

Notebooks in ``labs/`` stay thin; the reusable code lives here, one module per idea.
"""
from labkit.runtime import pin_cpu_kernels, quiet_third_party

pin_cpu_kernels()  # first, before PyTorch computes anything: the reference runs' float sums on any x86 CPU
quiet_third_party()

from labkit.presets import get_preset, use_preset  # noqa: E402

__all__ = ["get_preset", "use_preset"]
__version__ = "0.1.0"
