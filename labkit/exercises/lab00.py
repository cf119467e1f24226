"""Lab 00 (start here): its graded exercise and solution."""
from __future__ import annotations

__all__: list[str] = []
