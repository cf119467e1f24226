"""Lab 01 (pretraining): its graded exercise and solution."""
from __future__ import annotations

__all__: list[str] = []
