"""The word problems GRPO learns from: exact answers, the world's words, disjoint splits, clear errors."""
import re
from pathlib import Path

import pytest

from labkit import world
from labkit.rewards import extract_final_answer
from labkit.world.problems import MARKER, MAX_NUMBER, check_problem_rows, problem, problems


def _check_working(solution: str) -> int:
    """Replay the working '7 + 5 = 12 . 12 - 3 = 9 . #### 9' and return the final number it states."""
    steps = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)", solution)
    total = None
    for a, op, b, c in steps:
        a, b, c = int(a), int(b), int(c)
        assert total is None or a == total, f"a step does not start from the running total: {solution}"
        assert c == (a + b if op == "+" else a - b), f"wrong arithmetic in {solution}"
        total = c
    assert solution.endswith(f"{MARKER} {total}")
    return total


def test_every_problem_is_worked_out_right_and_within_the_worlds_numbers():
    vocabulary = set(world.vocabulary())
    for row in problems("train", 300) + problems("test", 300):
        total = _check_working(row["solution"])
        assert row["answer"] == str(total) == extract_final_answer(row["solution"])
        numbers = [int(n) for n in re.findall(r"\d+", row["prompt"][0]["content"] + " " + row["solution"])]
        assert min(numbers) >= 0 and max(numbers) <= MAX_NUMBER
        assert row["steps"] in (2, 3) and len(re.findall(r" = ", row["solution"])) == row["steps"]
        words = set(row["prompt"][0]["content"].split()) | set(row["solution"].split())
        assert words - vocabulary == {MARKER}  # only the marker is new to the world's tokenizer


def test_the_worked_example_in_the_module_docstring():
    row = problem("test", 0)
    assert row["prompt"][0]["content"] == ("solve the problem . lily has 8 eggs . max gives lily 1 more . "
                                           "lily gives 2 to leo . how many eggs does lily have now ?")
    assert row["solution"] == "8 + 1 = 9 . 9 - 2 = 7 . #### 7" and row["answer"] == "7"


def test_held_out_problems_are_never_training_problems():
    train = {r["prompt"][0]["content"] for r in problems("train", 12_000)}
    test = [r["prompt"][0]["content"] for r in problems("test", 500)]
    assert not set(test) & train
    assert len(set(test)) == 500


def test_demonstrators_show_their_working_at_the_given_share():
    rows = problems("train", 2000, worked_share=0.3)
    worked = [r for r in rows if "=" in r["messages"][-1]["content"]]
    assert 0.27 < len(worked) / len(rows) < 0.33
    bare = [r for r in rows if r not in worked]
    assert all(r["messages"][-1]["content"] == f"{MARKER} {r['answer']}" for r in bare)
    assert all(r["messages"][-1]["content"] == r["solution"] for r in worked)
    # the problem itself does not depend on the share: the same prompts and answers
    assert [r["answer"] for r in rows] == [r["answer"] for r in problems("train", 2000)]


def test_bad_problem_rows_get_clear_messages():
    good = problems("train", 2)
    assert check_problem_rows(good) == good
    with pytest.raises(ValueError, match=r"mine.jsonl, line 2: no 'answer'"):
        check_problem_rows([good[0], {"prompt": good[1]["prompt"]}], where="mine.jsonl")
    with pytest.raises(ValueError, match="line 1: the answer 'seven' is not a number"):
        check_problem_rows([{**good[0], "answer": "seven"}])
    with pytest.raises(ValueError, match="line 1: no 'prompt'"):
        check_problem_rows([{"answer": "3"}])
    with pytest.raises(ValueError, match="no problems given"):
        check_problem_rows([])
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        problem("validation", 0)


def test_problem_files_load_with_the_line_of_a_bad_problem(tmp_path):
    from labkit.data import JSONLError, load_problems

    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "tom has 3 apples and buys 2 . how many ?", "answer": "1,005"}\n\n'
                    '{"prompt": [{"role": "user", "content": "how many ?"}], "answer": 4}\n', encoding="utf-8")
    rows = load_problems(good)
    assert rows[0]["prompt"] == [{"role": "user", "content": "tom has 3 apples and buys 2 . how many ?"}]
    assert [r["answer"] for r in rows] == ["1005", "4"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 3: no 'answer'"):  # the file's own line number
        load_problems(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": \n', encoding="utf-8")
    with pytest.raises(JSONLError, match=r"broken.jsonl, line 2: not valid JSON"):
        load_problems(broken)
    with pytest.raises(FileNotFoundError, match="give a JSONL file of problems"):
        load_problems(tmp_path / "missing.jsonl")
    # the committed held-out problems load as they are
    committed = load_problems(Path(__file__).resolve().parent.parent / "datasets" / "problems" / "test.jsonl")
    assert [r["answer"] for r in committed[:3]] == [r["answer"] for r in problems("test", 3)]


def test_gsm8k_rows_become_problems():
    from labkit.data import from_gsm8k

    row = from_gsm8k({"question": "Natalia sold clips to 48 friends ...",
                      "answer": "She sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"})
    assert row["answer"] == "72" and row["prompt"][0] == {"role": "user", "content": "Natalia sold clips to 48 friends ..."}
    with pytest.raises(ValueError, match="no final number"):
        from_gsm8k({"question": "q", "answer": "no number"})
    with pytest.raises(ValueError, match="string 'question' and 'answer'"):
        from_gsm8k({"question": "q"})
