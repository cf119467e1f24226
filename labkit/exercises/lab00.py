"""Lab 00 (start here): its graded exercise and solution.

**Your turn: a one-shot prompt.** Lab 00 shows a *few-shot* sentiment prompt as role/content
messages whose assistant turns are JSON objects. The learner writes ``one_shot_prompt(query)``, which
builds a *one-shot* prompt for any review ``query``: the system message, one worked example
(:data:`EXAMPLE_REVIEW` as a user turn and the learner's JSON answer to it as an assistant turn), then
``query`` as the last user turn, which the model would answer. :func:`check_few_shot_prompt` calls it
with reviews the learner never sees.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

from typing import Any, Callable

from labkit import prompts
from labkit.exercises.common import Verdict, grade
from labkit.exercises.functions import Attempt, attempt, output_for, type_hints

__all__ = ["check_few_shot_prompt"]

EXERCISE = "a one-shot prompt"

# The worked example (the lab's cell shows the same string; a test keeps them equal).
EXAMPLE_REVIEW = "the soup at the inn was thin and cold , we left early"
EXAMPLE_LABEL = "negative"  # what the worked example's answer must say
QUERY = "the bread from the mill was warm and soft , the children loved it"  # the review the lab suggests trying
# Hidden reviews the check passes as `query` (the lab's first, then two it does not show).
_QUERIES = [QUERY,
            "the ferry left the harbor at noon and came back at dusk",
            "the roof of the barn leaks again and nobody came to fix it"]
SHOWN_QUERY = "the apples at the orchard were sweet and cheap"  # the review a hint may show
ROLES = ("system", "user", "assistant")
EXPECTED_ROLES = ["system", "user", "assistant", "user"]


def _cases() -> list[tuple[str]]:
    return [(query,) for query in _QUERIES]


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
    """What ``prompts.parse_sentiment`` says about the worked answer (None if it accepts it).

    Raises when the layout is not right yet: then there is no worked answer to parse.
    """
    worked = _example_answer(answer)
    try:
        prompts.parse_sentiment(worked, review=EXAMPLE_REVIEW)
    except ValueError as err:
        return str(err)
    return None


def _is_right(answer: Any, query: str) -> bool:
    return (_roles(answer) == EXPECTED_ROLES and answer[0]["content"].strip() != ""
            and _same_text(answer[1]["content"], EXAMPLE_REVIEW) and _same_text(answer[3]["content"], query)
            and _parse_error(answer) is None
            and prompts.parse_sentiment(answer[2]["content"])["label"] == EXAMPLE_LABEL)


def _first(values: list[Any], of: Callable[[Any], Any]) -> Any:
    """``of(value)`` for the first value where it neither raises nor gives None (else None)."""
    for value in values:
        try:
            found = of(value)
        except Exception:
            continue
        if found is not None:
            return found
    return None


def check_few_shot_prompt(fn: Callable) -> Verdict:
    """Check ``fn(query)``: system, example review (user), its JSON answer (assistant), ``query`` (user)."""
    cases = _cases()
    queries = [query for (query,) in cases]
    run = attempt(fn, cases)
    outputs = run.outputs if isinstance(run, Attempt) and run.ran else []
    unknown = _first(outputs, _unknown_role)
    parse_error = _first(outputs, _parse_error)

    def on_any(test: Callable[[Any, str], bool]) -> Callable[[Attempt], bool]:
        """``test(messages, query)`` holds for the prompt built for at least one hidden review."""
        def check(r: Attempt) -> bool:
            for messages, query in zip(r.outputs, queries):
                try:
                    if test(messages, query):
                        return True
                except Exception:  # this prompt is not far enough along for this hint
                    continue
            return False
        return check

    def shown() -> str:
        got = output_for(fn, (SHOWN_QUERY,))
        try:
            last = got[-1]["content"]
        except Exception:
            return ""
        return f" For example, given query = {SHOWN_QUERY!r}, your prompt ends with {last!r}."

    def hints(run: Attempt) -> list:
        return type_hints(run, "one_shot_prompt(query)", "exercises.check_few_shot_prompt(one_shot_prompt)",
                          "a list of messages", text=False) + [
            (on_any(lambda a, q: not isinstance(a, (list, tuple))),
             'a chat prompt is a *list* of messages, one dict per turn: [{"role": ..., "content": ...}, ...], '
             "not a single string or dict."),
            (on_any(lambda a, q: any(isinstance(m, dict) and isinstance(m.get("content"), dict) for m in a)),
             "a message's content is text. Turn the answer dict into a JSON string with "
             "prompts.answer_json(label, confidence, evidence) (or json.dumps)."),
            (on_any(lambda a, q: not _well_formed(a)),
             'every message is a dict with exactly two keys, "role" and "content", both strings.'),
            (lambda r: unknown is not None,
             f'the chat template knows three roles, "system", "user" and "assistant"; {unknown!r} is not one '
             "of them."),
            (on_any(lambda a, q: _roles(a)[-1] == "assistant"),
             "your prompt ends with an assistant turn, so it already contains the answer to the new review. "
             "End with the review to classify as a user turn: the model's job is to write the next assistant turn."),
            (on_any(lambda a, q: _roles(a)[0] != "system"),
             "start with a system message that says what the task is (prompts.SYSTEM says it)."),
            (on_any(lambda a, q: _roles(a) != EXPECTED_ROLES),
             "one worked example makes four messages, in this order: the system message, the example review "
             "(user), its answer (assistant), and the review to classify (user)."),
            (lambda r: all(o == r.outputs[0] for o in r.outputs),
             "your function builds the same prompt whatever review it is given. The last user message is the "
             "review to classify: put `query` there (the check passes reviews of its own)." + shown()),
            (on_any(lambda a, q: _same_text(a[1]["content"], q) and _same_text(a[3]["content"], EXAMPLE_REVIEW)),
             "the two reviews have swapped places: the worked example is the review you answer yourself "
             "(example_review); the review the model should classify (query) comes last."),
            (on_any(lambda a, q: not (_same_text(a[1]["content"], EXAMPLE_REVIEW) and _same_text(a[3]["content"], q))),
             "use the reviews exactly as given (example_review, then the function's query): the evidence in the "
             "answer is quoted from the review word for word, so the text must not change." + shown()),
            (on_any(lambda a, q: not a[0]["content"].strip()), "the system message is empty: say what the task is."),
            (lambda r: parse_error is not None,
             f"prompts.parse_sentiment rejects your worked answer: {parse_error}"),
            (on_any(lambda a, q: prompts.parse_sentiment(a[2]["content"])["label"] != EXAMPLE_LABEL),
             "read the example review again: is the reviewer pleased, unhappy, or just saying what happened? "
             "The label of your worked answer should say so, since the model will copy your judgement."),
        ]

    if run is Ellipsis:
        return grade(EXERCISE, ..., bool, praise="", otherwise="")
    return grade(
        EXERCISE, run, lambda r: r.ran and all(_is_right(o, q) for o, q in zip(r.outputs, queries)),
        praise="Right for every review the check tried. A chat model would now see one solved example and write "
               "the next assistant turn for the new review, as a JSON object a program can check.",
        hints=hints(run),
        otherwise="compare your list with the few-shot prompt shown in section 4: the same layout, "
                  "with one worked example instead of three.")


# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_few_shot_prompt(query: str) -> list[dict]:
    """A one-shot prompt: the task, one solved example, then the review the model should answer."""
    return [
        {"role": "system", "content": prompts.SYSTEM},
        {"role": "user", "content": EXAMPLE_REVIEW},
        {"role": "assistant", "content": prompts.answer_json("negative", 0.9, "thin and cold")},
        {"role": "user", "content": query},
    ]


SOLUTIONS = {"few_shot_prompt": solution_few_shot_prompt}
