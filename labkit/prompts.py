"""Prompt formats: how a task is written down for a chat model.

A chat model reads a list of *messages*, each a ``{"role": ..., "content": ...}`` dict (the layout
of the Hugging Face Hub's instruction datasets such as no_robots). Lab 00 builds a few-shot
sentiment prompt: a system message says what to do, three worked examples (a user review and the
assistant's answer) show how, and the last user message is the review to classify.

The answers are JSON objects, e.g. ``{"label": "positive", "confidence": 0.93, "evidence": "fresh
and sweet"}``. Structure in symbols helps twice: the model sees a fixed pattern to copy, and a
program can check the answer (:func:`parse_sentiment`) instead of guessing what free text meant.
"""
from __future__ import annotations

import json
import math

LABELS = ("positive", "negative", "neutral")

SYSTEM = ("You classify the sentiment of short reviews from the village. Answer with one JSON object: "
          "label (positive, negative or neutral), confidence (a number from 0 to 1) and evidence "
          "(words copied from the review).")

# (review, answer) pairs: reviews are written like the world's text (lowercase words and
# punctuation separated by single spaces); each answer's evidence is quoted from its review.
SENTIMENT_EXAMPLES: list[tuple[str, dict]] = [
    ("the cake from the bakery was fresh and sweet , i will buy two more tomorrow",
     {"label": "positive", "confidence": 0.93, "evidence": "fresh and sweet"}),
    ("the pie at the fair was old and cold , what a waste of a morning",
     {"label": "negative", "confidence": 0.88, "evidence": "old and cold"}),
    ("i bought three buns at the bakery and took them to the mill",
     {"label": "neutral", "confidence": 0.71, "evidence": "i bought three buns"}),
]

DEFAULT_QUERY = "the cookies from the bakery were tiny but warm , mia and i ate them all"


def answer_json(label: str, confidence: float, evidence: str) -> str:
    """The assistant's answer as one line of JSON (keys in a fixed order)."""
    return json.dumps({"label": label, "confidence": confidence, "evidence": evidence})


def few_shot_sentiment_messages(query: str | None = None) -> list[dict]:
    """A few-shot sentiment prompt as role/content messages.

    System message, then three (user review, assistant JSON answer) pairs, then the user's
    ``query`` (default :data:`DEFAULT_QUERY`). Ends with a user turn: the model's job is the next
    assistant turn.
    """
    query = DEFAULT_QUERY if query is None else query
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string (the review to classify)")
    messages = [{"role": "system", "content": SYSTEM}]
    for review, answer in SENTIMENT_EXAMPLES:
        messages.append({"role": "user", "content": review})
        messages.append({"role": "assistant", "content": answer_json(**answer)})
    messages.append({"role": "user", "content": query.strip()})
    return messages


def parse_sentiment(text: str, review: str | None = None) -> dict:
    """Parse and check a sentiment answer; return ``{"label", "confidence", "evidence"}``.

    Raises ``ValueError`` saying what is wrong if ``text`` is not one JSON object with exactly
    those keys, if ``label`` is not one of :data:`LABELS`, if ``confidence`` is not a number in
    [0, 1], or if ``evidence`` is not a non-empty string. With ``review``, the evidence must also
    be words that occur in the review (whole words, in order).
    """
    try:
        answer = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"the answer is not valid JSON ({err}); expected one object like "
                         f"{answer_json('positive', 0.9, 'words from the review')}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"the answer must be a JSON object {{...}}, got {type(answer).__name__}")
    expected = {"label", "confidence", "evidence"}
    if set(answer) != expected:
        missing, extra = sorted(expected - set(answer)), sorted(set(answer) - expected)
        raise ValueError(f"the answer must have exactly the keys label, confidence, evidence "
                         f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})")
    label, confidence, evidence = answer["label"], answer["confidence"], answer["evidence"]
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}; got {label!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise ValueError(f"confidence must be a number from 0 to 1; got {confidence!r}")
    if not isinstance(evidence, str) or not evidence.strip():
        raise ValueError(f"evidence must be a non-empty string quoted from the review; got {evidence!r}")
    if review is not None and f" {' '.join(evidence.split())} " not in f" {' '.join(review.split())} ":
        raise ValueError(f"evidence {evidence!r} does not occur in the review {review!r}")
    return {"label": label, "confidence": float(confidence), "evidence": evidence}


def show_mask(tokens: list[str], mask: list[int], turn_starts: tuple[str, ...] = (
        "<|system|>", "<|user|>", "<|assistant|>")) -> str:
    """Tokens as text, one chat turn per line, with each trained-on token (mask 1) in [brackets]."""
    if len(tokens) != len(mask):
        raise ValueError(f"tokens ({len(tokens)}) and mask ({len(mask)}) must have the same length")
    lines: list[list[str]] = [[]]
    line_has_turn = False
    for token, m in zip(tokens, mask):
        if token in turn_starts:
            if line_has_turn:
                lines.append([])
            line_has_turn = True
        lines[-1].append(f"[{token}]" if m else token)
    return "\n".join(" ".join(line) for line in lines)
