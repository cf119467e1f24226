"""Rule rewards: functions that score a response by a rule, such as its final numeric answer.

The preference world's hidden gold reward lives with the world (:mod:`labkit.world.preferences`);
learned rewards are reward models (:mod:`labkit.train.reward`).
"""
from __future__ import annotations

import re

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def _clean(number: str) -> str:
    return number.replace(",", "").rstrip(".")


def extract_final_answer(text: str) -> str | None:
    """The final numeric answer of a response, or ``None`` if it gives none.

    Understands the GSM8K marker (``'#### 1,234'`` → ``'1234'``) and a closing phrase
    (``'The answer is 42.'`` → ``'42'``); otherwise takes the last number in the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"extract_final_answer expects a string, got {type(text).__name__}")
    marked = re.search(rf"####\s*({_NUMBER})", text)
    if marked:
        return _clean(marked.group(1))
    phrase = re.findall(rf"answer\s*(?:is|:|=)\s*\$?({_NUMBER})", text, flags=re.IGNORECASE)
    if phrase:
        return _clean(phrase[-1])
    numbers = re.findall(_NUMBER, text)
    return _clean(numbers[-1]) if numbers else None
