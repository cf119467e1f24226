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
    (``'The answer is 42.'`` → ``'42'``); otherwise takes the last number in the text. The first
    marker ends the answer: ``'#### 5 #### 6'`` → ``'5'``, so a second marker can neither change the
    answer nor hedge between two (the dataset card of ``datasets/problems`` says the same).
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


# ------------------------------------------------------------------------------- GRPO's rule rewards
#
# Each takes what TRL's GRPOTrainer passes a reward function, ``(prompts, completions, **columns)``,
# and returns one float per completion. A completion is a string or, for chat data, a list of
# role/content messages (the assistant's turn). Dataset columns (such as ``answer``) arrive as
# keyword lists, one entry per completion.

def completion_text(completion) -> str:
    """The text of one completion: a string as it is, or the contents of its messages joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        return " ".join(str(m.get("content", "")) for m in completion)
    raise TypeError(f"a completion is a string or a list of role/content messages, got {type(completion).__name__}")


def same_number(predicted: str | None, expected) -> bool:
    """Whether an extracted answer equals the expected one as a number ("1,200.50" equals 1200.5)."""
    if predicted is None:
        return False
    try:
        return float(_clean(str(predicted))) == float(_clean(str(expected)))
    except ValueError:
        return False


def correctness_reward(prompts, completions, answer, **_) -> list[float]:
    """1.0 where the completion's final answer (:func:`extract_final_answer`) equals ``answer``, else 0.0."""
    if len(answer) != len(completions):
        raise ValueError(f"correctness_reward got {len(completions)} completions but {len(answer)} answers")
    return [float(same_number(extract_final_answer(completion_text(c)), a)) for c, a in zip(completions, answer)]


_FORMAT = re.compile(rf"####\s*{_NUMBER}\s*$")


def format_reward(prompts, completions, **_) -> list[float]:
    """1.0 where the completion ends with the ``#### N`` line the problems ask for, else 0.0 (right or not)."""
    return [float(bool(_FORMAT.search(completion_text(c).strip()))) for c in completions]


def length_reward(prompts, completions, max_words: int = 50, **_) -> list[float]:
    """The completion's length in words over ``max_words``, capped at 1: a reward a policy can hack.

    It pays for length alone, whatever the answer; lab 07 trains on it to watch answers grow while
    accuracy does not.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    return [min(len(completion_text(c).split()), max_words) / max_words for c in completions]
