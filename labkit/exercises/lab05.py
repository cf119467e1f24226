"""Lab 05 (PPO): its graded exercise and solution."""
from __future__ import annotations

__all__: list[str] = []
