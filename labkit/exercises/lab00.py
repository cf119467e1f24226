"""Lab 00 (start here): its graded exercise and solution.

**Your turn: a one-shot prompt.** Lab 00 shows a *few-shot* sentiment prompt as role/content
messages whose assistant turns are JSON objects. The learner writes a *one-shot* prompt for two
new reviews: the system message, one worked example (:data:`EXAMPLE_REVIEW` as a user turn and its
JSON answer as an assistant turn), then :data:`QUERY` as the last user turn, which the model would
answer. :func:`check_few_shot_prompt` grades it.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

from typing import Any

from labkit import prompts
from labkit.exercises.common import Verdict, grade

__all__ = ["check_few_shot_prompt"]

# The two reviews of the exercise (the lab's cell shows the same strings; a test keeps them equal).
EXAMPLE_REVIEW = "the soup at the inn was thin and cold , we left early"     # the worked example
QUERY = "the bread from the mill was warm and soft , the children loved it"  # the review to classify
EXAMPLE_LABEL = "negative"  # what the worked example's answer must say
ROLES = ("system", "user", "assistant")
EXPECTED_ROLES = ["system", "user", "assistant", "user"]


def _same_text(a: Any, b: str) -> bool:
    return isinstance(a, str) and " ".join(a.split()) == " ".join(b.split())


def _messages(answer: Any) -> list[dict]:
    """The answer as a list of messages, or raise (the predicates below treat a raise as "no")."""
    if not isinstance(answer, (list, tuple)):
        raise TypeError("not a list")
    return list(answer)


def _well_formed(answer: Any) -> bool:
    """A list of dicts with exactly the keys role and content, both strings."""
    return all(isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["role"], str)
               and isinstance(m["content"], str) for m in _messages(answer))


def _roles(answer: Any) -> list[str]:
    if not _well_formed(answer):
        raise ValueError("not well formed")
    return [m["role"] for m in answer]


def _unknown_role(answer: Any) -> str | None:
    return next((role for role in _roles(answer) if role not in ROLES), None)


def _example_answer(answer: Any) -> str:
    """The worked example's assistant content (raises unless the layout is right)."""
    if _roles(answer) != EXPECTED_ROLES:
        raise ValueError("wrong layout")
    return answer[2]["content"]


def _parse_error(answer: Any) -> str | None:
    """What ``prompts.parse_sentiment`` says about the worked answer (None if it accepts it)."""
    try:
        prompts.parse_sentiment(_example_answer(answer), review=EXAMPLE_REVIEW)
    except ValueError as err:
        return str(err)
    return None


def _is_right(answer: Any) -> bool:
    return (_roles(answer) == EXPECTED_ROLES and answer[0]["content"].strip() != ""
            and _same_text(answer[1]["content"], EXAMPLE_REVIEW) and _same_text(answer[3]["content"], QUERY)
            and _parse_error(answer) is None
            and prompts.parse_sentiment(answer[2]["content"])["label"] == EXAMPLE_LABEL)


def check_few_shot_prompt(answer: Any) -> Verdict:
    """Grade a one-shot prompt: system, example review (user), its JSON answer (assistant), query (user)."""
    try:
        unknown = _unknown_role(answer)
    except Exception:
        unknown = None
    try:
        parse_error = _parse_error(answer)
    except Exception:  # the layout is not right yet: another hint applies first
        parse_error = None
    return grade(
        "a one-shot prompt", answer, _is_right,
        praise="A chat model would now see one solved example and write the next assistant turn for the "
               "new review, as a JSON object a program can check.",
        hints=[
            (lambda a: not isinstance(a, (list, tuple)),
             'a chat prompt is a *list* of messages, one dict per turn: [{"role": ..., "content": ...}, ...], '
             "not a single string or dict."),
            (lambda a: any(isinstance(m, dict) and isinstance(m.get("content"), dict) for m in a),
             "a message's content is text. Turn the answer dict into a JSON string with "
             "prompts.answer_json(label, confidence, evidence) (or json.dumps)."),
            (lambda a: not _well_formed(a),
             'every message is a dict with exactly two keys, "role" and "content", both strings.'),
            (lambda a: unknown is not None,
             f'the chat template knows three roles, "system", "user" and "assistant"; {unknown!r} is not one '
             "of them."),
            (lambda a: _roles(a)[-1] == "assistant",
             "your prompt ends with an assistant turn, so it already contains the answer to the new review. "
             "End with the review to classify as a user turn: the model's job is to write the next assistant turn."),
            (lambda a: _roles(a)[0] != "system",
             "start with a system message that says what the task is (prompts.SYSTEM says it)."),
            (lambda a: _roles(a) != EXPECTED_ROLES,
             "one worked example makes four messages, in this order: the system message, the example review "
             "(user), its answer (assistant), and the review to classify (user)."),
            (lambda a: _same_text(a[1]["content"], QUERY) and _same_text(a[3]["content"], EXAMPLE_REVIEW),
             "the two reviews have swapped places: the worked example is the review you answer yourself "
             "(example_review); the review the model should classify (query) comes last."),
            (lambda a: not (_same_text(a[1]["content"], EXAMPLE_REVIEW) and _same_text(a[3]["content"], QUERY)),
             "use the two reviews exactly as given (example_review and query): the evidence in the answer "
             "is quoted from the review word for word, so the text must not change."),
            (lambda a: not a[0]["content"].strip(), "the system message is empty: say what the task is."),
            (lambda a: parse_error is not None,
             f"prompts.parse_sentiment rejects your worked answer: {parse_error}"),
            (lambda a: prompts.parse_sentiment(a[2]["content"])["label"] != EXAMPLE_LABEL,
             "read the example review again: is the reviewer pleased, unhappy, or just saying what happened? "
             "The label of your worked answer should say so, since the model will copy your judgement."),
        ],
        otherwise="compare your list with the few-shot prompt shown in section 4: the same layout, "
                  "with one worked example instead of three.")


# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_few_shot_prompt(example_review: str = EXAMPLE_REVIEW, query: str = QUERY) -> list[dict]:
    """A one-shot prompt: the task, one solved example, then the review the model should answer."""
    return [
        {"role": "system", "content": prompts.SYSTEM},
        {"role": "user", "content": example_review},
        {"role": "assistant", "content": prompts.answer_json("negative", 0.9, "thin and cold")},
        {"role": "user", "content": query},
    ]


SOLUTIONS = {"few_shot_prompt": solution_few_shot_prompt}
