"""The JSONL loaders refuse what cannot be read or scored, naming the file, the line and what to do."""
import json

import pytest

from labkit import data

GOOD = '{"prompt": "tom has 3 apples and buys 2 . how many ?", "answer": "5"}\n'


def problems_file(tmp_path, second_line: str):
    """A problems file whose line 2 is ``second_line`` (a JSON object written as text)."""
    path = tmp_path / "p.jsonl"
    path.write_text(GOOD + second_line + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("answer, problem", [
    *[(nan, "is not a finite number") for nan in ['"NaN"', '"nan"', '"inf"', '"-Infinity"', "NaN", "-Infinity",
                                                  "1e400"]],   # JSON reads the number 1e400 as infinity
    *[(part, "is not a whole number") for part in ['"3.5"', "3.5", '"1,234.5"', '"1e-400"']],
    *[(big, "is too large") for big in ['"1e400"', "1000000000000000",   # 10**15, the limit
                                        '"-1,000,000,000,000,000"', '"1e15"']],
])
def test_answers_that_cannot_score_are_refused(tmp_path, answer, problem):
    path = problems_file(tmp_path, '{"prompt": "how many ?", "answer": %s}' % answer)
    with pytest.raises(ValueError, match=rf"p\.jsonl, line 2: the 'answer' .* {problem}.*"):
        data.load_problems(path)


@pytest.mark.parametrize("answer", ['""', '"  "', "null", '"12 apples"', '"0x10"', "true", "[1]", '{"n": 1}'])
def test_answers_refused_before_are_still_refused(tmp_path, answer):
    path = problems_file(tmp_path, '{"prompt": "how many ?", "answer": %s}' % answer)
    with pytest.raises(ValueError, match=r"p\.jsonl, line 2: (no 'answer'|the answer .* is not a number)"):
        data.load_problems(path)


@pytest.mark.parametrize("prompt, problem", [
    ('["how many", "?"]', r"message 1 is 'how many'"),
    ("5", "the 'prompt' is a int"),
    ('{"content": "how many ?"}', "the 'prompt' is a dict"),
    ('"   "', "the 'prompt' is blank"),
    ('[{"role": "user"}]', "message 1 is .* not a role/content message"),
    ('[{"role": "user", "content": 7}]', "message 1 is .* not a role/content message"),
    ('[{"role": "user", "content": "how many ?"}, {"role": "assistant", "content": "5"}]',
     "ends with a 'assistant' message"),
    ('[{"role": "system", "content": "be brief"}, {"role": "user", "content": " "}]', "ends with a blank user"),
])
def test_prompts_that_are_not_questions_are_refused(tmp_path, prompt, problem):
    path = problems_file(tmp_path, '{"prompt": %s, "answer": "4"}' % prompt)
    with pytest.raises(ValueError, match=rf"p\.jsonl, line 2: (the 'prompt' )?{problem}.*ending with the user's"):
        data.load_problems(path)


def test_valid_problems_stay_valid(tmp_path):
    answers = ['"12"', '"1,234"', "12", "12.0", '"12.0"', '"-3"', '" 7 "', '"+8"', "999999999999999", '"1e3"']
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how many ?"}]
    path = tmp_path / "ok.jsonl"
    path.write_text("".join('{"prompt": "q", "answer": %s}\n' % a for a in answers)
                    + json.dumps({"prompt": messages, "answer": 4, "solution": "2 + 2 = 4"}) + "\n", encoding="utf-8")
    rows = data.load_problems(path)
    # every answer that loaded before still loads, stored as plain digits
    assert [r["answer"] for r in rows] == ["12", "1234", "12", "12", "12", "-3", "7", "8", "999999999999999",
                                           "1000", "4"]
    assert rows[0]["prompt"] == [{"role": "user", "content": "q"}]
    assert rows[-1]["prompt"] == messages and rows[-1]["solution"] == "2 + 2 = 4"


def latin1_file(tmp_path, lines_before: int, newline: str = "\n"):
    """A JSONL file of good rows with a Latin-1 'é' (byte 0xe9) on line ``lines_before + 1``."""
    path = tmp_path / "latin1.jsonl"
    good = ('{"prompt": "how many ?", "answer": "5", "text": "fine"}' + newline) * lines_before
    path.write_bytes(good.encode("utf-8") + b'{"prompt": "caf\xe9 ?", "answer": "5"}' + newline.encode())
    return path


@pytest.mark.parametrize("loader", ["read_jsonl", "load_jsonl_dataset", "load_problems"])
@pytest.mark.parametrize("lines_before, newline", [(2, "\n"), (3000, "\n"), (3000, "\r\n")])
def test_non_utf8_bytes_name_the_file_and_line(tmp_path, loader, lines_before, newline):
    # 3000 lines put the bad byte far past the decoder's first chunk of the file
    path = latin1_file(tmp_path, lines_before, newline)
    with pytest.raises(data.JSONLError, match=rf"latin1\.jsonl, line {lines_before + 1}: not UTF-8 text "
                                              r"\(byte 0xe9 at column 16.*re-save the file as UTF-8"):
        getattr(data, loader)(path)


@pytest.mark.parametrize("loader", ["read_jsonl", "load_jsonl_dataset", "load_problems"])
@pytest.mark.parametrize("text, what", [("", "the file is empty"), ("\n  \n\r\n\t\n", "every line is blank")])
def test_a_file_without_rows_is_an_error_naming_it(tmp_path, loader, text, what):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(data.JSONLError, match=rf"empty\.jsonl has no rows: {what}"):
        getattr(data, loader)(path)
