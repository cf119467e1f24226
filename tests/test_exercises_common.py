"""The machinery every graded exercise shares: not attempted, right, and a hint that fits the mistake."""
import torch

from labkit import exercises
from labkit.exercises.common import NOT_ATTEMPTED, RIGHT, WRONG, close, grade


def check_double(answer):
    return grade("double 21", answer, lambda a: a == 42, praise="42 it is.",
                 hints=[(lambda a: a == 21, "you returned the input: multiply it by two."),
                        (lambda a: a < 0, "doubling a positive number keeps it positive.")],
                 otherwise="twice 21 is 21 + 21.")


def test_the_shipped_placeholder_is_not_attempted_and_not_an_error():
    verdict = check_double(...)
    assert verdict.status == NOT_ATTEMPTED and not verdict
    assert "Replace the ... with your answer" in str(verdict)


def test_right_and_each_hint_and_the_fallback():
    assert check_double(42).status == RIGHT and check_double(42)
    assert check_double(21).status == WRONG and "multiply it by two" in check_double(21).message
    assert "positive" in check_double(-5).message
    assert check_double(7).message == "Hint: twice 21 is 21 + 21."


def test_an_answer_of_the_wrong_type_gets_a_hint_not_a_traceback():
    verdict = check_double("forty-two")  # "forty-two" < 0 raises TypeError inside the hint
    assert verdict.status == WRONG and "21 + 21" in verdict.message


def test_the_verdict_shows_in_a_notebook_as_coloured_html_and_escapes_text():
    verdict = grade("a < b", 1, lambda a: False, praise="", otherwise="compare <a> with <b>")
    assert "&lt;a&gt;" in verdict._repr_html_() and "#b3261e" in verdict._repr_html_()
    assert verdict.exercise == "a < b"


def test_close_takes_numbers_and_one_element_tensors():
    assert close(torch.tensor(0.5001), 0.5) and close(2.0, 2.0005) and not close(0.6, 0.5)
    assert close(1000.4, 1000.0)  # relative for large values


def test_the_package_exposes_grade_and_verdict():
    assert exercises.grade is grade and exercises.Verdict.__name__ == "Verdict"
