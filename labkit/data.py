"""Datasets: the world's files in ``datasets/``, reading JSONL safely, and adapters for hub layouts.

Files are JSON Lines (one JSON object per line), the format ``datasets.load_dataset("json", ...)``
reads and the Hugging Face Hub uses for instruction and preference data. ``build_datasets`` writes
them from the generator; a test checks the committed files are exactly what it writes. Each dataset's
card (its ``README.md``) is a template in ``labkit/cards/`` filled with the numbers computed here.
:func:`from_hh_rlhf` turns Anthropic's hh-rlhf transcripts into prompt / chosen / rejected messages;
:func:`load_problems` reads word problems for GRPO from JSONL and :func:`from_gsm8k` converts GSM8K rows.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Iterable

from labkit import runtime, world

DATASETS_DIR = runtime.repo_root() / "datasets"
STORY_FILES = {"validation": 1_000, "train_sample": 2_000}   # split name -> documents committed
SHORTCUT_FILES = {"train": 2_000, "test": 500, "probe": 500, "balanced": 2_000}
INSTRUCTION_FILES = {"train_sample": 20, "validation": 50, "test": 100}  # split -> examples per category
PREFERENCE_FILES = {"train_sample": 200, "test": 2_000}  # split -> labelled pairs
RANKING_FILE_SIZE = 200                                  # rankings of four responses
DEMONSTRATION_FILE_SIZE = 200                            # SFT demonstrations of the preference task
PROBLEM_FILES = {"train_sample": 200, "test": 500}       # split -> word problems committed
# The measured figures the preferences and problems cards quote: read from the reference results
# (results/cpu.json, written by `python -m labkit results --preset cpu`), card key -> figure name.
PROBLEMS_FIGURES = {
    "sft_accuracy": "stages.sft_math.base_accuracy",        # the SFT policy before sft_math, greedy
    "sft_math_accuracy": "stages.sft_math.accuracy",        # greedy
    "sft_math_sampled_accuracy": "stages.sft_math.sampled_accuracy",
    "sft_math_worked_share": "stages.sft_math.worked_share",  # sampled answers that show working
    "sft_math_worked_accuracy": "stages.sft_math.worked_accuracy",  # right among those that show working
    "sft_math_bare_accuracy": "stages.sft_math.bare_accuracy",  # right among bare '#### N' answers
    "grpo_accuracy": "stages.grpo.accuracy",                # greedy
    "grpo_sampled_accuracy": "stages.grpo.sampled_accuracy",
    "grpo_worked_share": "stages.grpo.worked_share",
}
SFT_GOLD_REWARD = "stages.sft.gold_reward"


def measured_cards() -> dict[str, str]:
    """The cards that quote measured figures (path under ``datasets/`` -> text): ``python -m labkit results
    render`` rewrites them with the rest of the pages when the reference results change."""
    return {"preferences/README.md": _preferences_card(), "problems/README.md": _problems_card()}


def _reference_figures(names: dict[str, str]) -> dict[str, float]:
    """The reference values of ``names`` (card key -> figure name); a missing one says how to measure it."""
    from labkit import reference

    found = {key: reference.figure(name) for key, name in names.items()}
    missing = [names[k] for k, v in found.items() if v is None]
    if missing:
        raise ValueError(f"the dataset cards quote {', '.join(missing)}, which results/cpu.json lacks: run "
                         "`python -m labkit results --preset cpu` first")
    return found


class JSONLError(ValueError):
    """A JSONL file that does not read as rows: a line that is not UTF-8 text or not a JSON object,
    or a file with no rows at all; the message names the file (and the line)."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file into a list of dicts; a malformed line, or a file with no rows, raises :class:`JSONLError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `python -m labkit data build` to make it")
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: Path):
    """``(line number, object)`` for each non-blank line of a JSONL file. A line that is not UTF-8 or
    not a JSON object raises :class:`JSONLError` naming the file and the line; so does a file
    without a single row (empty, or only blank lines), once it has been read to the end."""
    rows = 0
    with path.open(encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise JSONLError(f"{path}, line {number}: not valid JSON ({err.msg} at column "
                                     f"{err.colno}). Each line must hold one JSON object.") from None
                if not isinstance(row, dict):
                    raise JSONLError(f"{path}, line {number}: expected a JSON object {{...}}, "
                                     f"got {type(row).__name__}")
                rows += 1
                yield number, row
        except UnicodeDecodeError:
            # the decoder works on chunks of the file, so its position says nothing about the line: find it
            raise _not_utf8(path) from None
    if not rows:
        what = "the file is empty" if path.stat().st_size == 0 else "every line is blank"
        raise JSONLError(f"{path} has no rows: {what}. A JSONL file holds one JSON object per line; "
                         "check the path, or write the rows first")


def _not_utf8(path: Path) -> Exception:
    """The error for a file that is not UTF-8: the line and column of its first undecodable byte."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        # count lines as reading the file in text mode does ('\n', '\r\n' or a lone '\r' ends one)
        before = raw[:err.start].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        return JSONLError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {column}, "
                          f"{err.reason}). JSON Lines files are UTF-8: re-save the file as UTF-8 (e.g. "
                          "`iconv -f latin1 -t utf-8 old.jsonl > new.jsonl` for a Latin-1 file)")
    return JSONLError(f"{path}: not UTF-8 text; re-save the file as UTF-8")   # changed while we read it


def load_jsonl_dataset(path: str | Path):
    """Load a JSONL file as a ``datasets.Dataset`` (checked line by line first for clear errors: a file
    that is missing, has a malformed or non-UTF-8 line, or has no rows raises before ``datasets`` reads it)."""
    import datasets

    read_jsonl(path)
    return datasets.load_dataset("json", data_files=str(path), split="train")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows as JSON Lines (keys in the given order, UTF-8, '\\n' endings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def story_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    """Rows for the story corpus: the text plus the generator's own statistics of it."""
    source = "train" if split.startswith("train") else split
    rows = []
    for i, doc in enumerate(world.corpus(source, n, seed)):
        rows.append({
            "id": f"{source}-{i}",
            "kind": "dialogue" if doc.tokens[1] == ":" else "story",
            "text": doc.text,
            "n_tokens": len(doc.tokens),
            "nll": round(doc.nll, 6),
            "entropy": round(sum(doc.entropy), 6),
        })
    return rows


def render_card(name: str, **values) -> str:
    """A dataset card: the template ``labkit/cards/<name>.md`` with its ``{field:spec}`` placeholders
    filled from ``values`` by :meth:`str.format` (so a literal brace in a template is written twice)."""
    template = (resources.files("labkit") / "cards" / f"{name}.md").read_text(encoding="utf-8")
    return template.format(**values)


def _stories_card(stats: dict, rows: dict[str, list[dict]]) -> str:
    return render_card("stories", counts={s: len(r) for s, r in rows.items()}, stats=stats,
                       floor_over_unigram=stats["entropy_floor"] / stats["unigram_entropy"])


def build_datasets(out: str | Path = DATASETS_DIR) -> list[Path]:
    """Write every generated data file and its card under ``out``; return the paths written."""
    out = Path(out)
    written = []
    rows = {split: story_rows(split, n) for split, n in STORY_FILES.items()}
    for split, split_rows in rows.items():
        written.append(out / "stories" / f"{split}.jsonl")
        write_jsonl(written[-1], split_rows)
    stats = world.entropy_stats(world.corpus("validation", STORY_FILES["validation"]),
                                world.corpus("train", STORY_FILES["train_sample"]))
    written.append(out / "stories" / "README.md")
    written[-1].write_text(_stories_card(stats, rows), encoding="utf-8")

    from labkit.world import shortcut

    for split, n in SHORTCUT_FILES.items():
        written.append(out / "shortcut" / f"{split}.jsonl")
        write_jsonl(written[-1], shortcut.shortcut_split(split, n))
    written.append(out / "shortcut" / "README.md")
    written[-1].write_text(shortcut.card(SHORTCUT_FILES), encoding="utf-8")

    from labkit.world import tasks

    for split, n in INSTRUCTION_FILES.items():
        written.append(out / "instructions" / f"{split}.jsonl")
        write_jsonl(written[-1], tasks.task_split("train" if split == "train_sample" else split, n))
    written.append(out / "instructions" / "README.md")
    written[-1].write_text(_instructions_card(), encoding="utf-8")

    from labkit.world import preferences

    for split, n in PREFERENCE_FILES.items():
        written.append(out / "preferences" / f"{split}.jsonl")
        write_jsonl(written[-1], preferences.preference_pairs("train" if split == "train_sample" else split, n))
    written.append(out / "preferences" / "rankings.jsonl")
    write_jsonl(written[-1], preferences.ranking_rows(RANKING_FILE_SIZE))
    written.append(out / "preferences" / "prompts.jsonl")
    write_jsonl(written[-1], [{"split": split, **row} for split in ("train", "heldout")
                              for row in preferences.alignment_prompts(split)])
    written.append(out / "preferences" / "demonstrations.jsonl")
    write_jsonl(written[-1], [{"id": f"train-{i}", **preferences.demonstration("train", i)}
                              for i in range(DEMONSTRATION_FILE_SIZE)])
    written.append(out / "preferences" / "README.md")
    written[-1].write_text(_preferences_card(), encoding="utf-8")

    for split, split_rows in problem_files().items():
        written.append(out / "problems" / f"{split}.jsonl")
        write_jsonl(written[-1], split_rows)
    written.append(out / "problems" / "README.md")
    written[-1].write_text(_problems_card(), encoding="utf-8")
    return written


def problem_files() -> dict[str, list[dict]]:
    """The committed word problems: the first ``sft_math`` demonstrations (as the ``cpu`` preset
    makes them, most without working) and the held-out problems, with worked solutions."""
    from labkit.presets import get_preset
    from labkit.world import problems

    cpu = get_preset("cpu")
    return {"train_sample": problems.problems("train", PROBLEM_FILES["train_sample"], seed=cpu.world_seed,
                                              worked_share=cpu.sft_math.worked_share),
            "test": problems.problems("test", PROBLEM_FILES["test"], seed=cpu.world_seed)}


def _problems_card() -> str:
    from labkit.presets import get_preset
    from labkit.world import problems

    cpu = get_preset("cpu")
    rows = problem_files()
    sample = rows["train_sample"]
    worked = sum(r["messages"][-1]["content"] != f"{problems.MARKER} {r['answer']}" for r in sample)
    example = rows["test"][0]
    grpo_start = cpu.sft_math.train_problems
    return render_card(
        "problems", max_number=problems.MAX_NUMBER, seed=cpu.world_seed, marker=problems.MARKER,
        n_sample=len(sample), n_test=len(rows["test"]), worked=worked, worked_share=cpu.sft_math.worked_share,
        steps={k: sum(r["steps"] == k for r in rows["test"]) for k in (2, 3)},
        example_prompt=example["prompt"][0]["content"], example_solution=example["solution"],
        grpo=cpu.grpo, grpo_start=grpo_start,
        grpo_last=grpo_start + cpu.grpo.steps * cpu.grpo.prompts_per_step - 1,   # the last problem GRPO sees
        m=_reference_figures(PROBLEMS_FIGURES))


def _preferences_card() -> str:
    from labkit.metrics import scorer_accuracy
    from labkit.world import preferences as prefs

    test = prefs.preference_pairs("test", PREFERENCE_FILES["test"])
    heldout, train_prompts = prefs.alignment_prompts("heldout"), prefs.alignment_prompts("train")
    gold = _reference_figures({"sft": SFT_GOLD_REWARD})["sft"]
    sft = (f"{gold:.2f}, in the reference run of `python -m labkit results --preset cpu` "
           "(`results/cpu.json`, `stages.sft.gold_reward`: 8 sampled answers per prompt at temperature 1)")
    return render_card(
        "preferences", n_prompts=len(train_prompts) + len(heldout), n_demonstrations=DEMONSTRATION_FILE_SIZE,
        pairs=PREFERENCE_FILES, n_rankings=RANKING_FILE_SIZE,
        counts=" or ".join(str(c) for c in prefs.COUNTS if c), n_phrasings=len(prefs.PHRASINGS),
        phrasings="\n".join(f"- `{whole}` / `{counted}`" for whole, counted in prefs.PHRASINGS),
        heldout_requests=len(heldout) // len(prefs.PHRASINGS), n_heldout=len(heldout),
        n_train_prompts=len(train_prompts), safety_weight=prefs.SAFETY_WEIGHT, sharp=", ".join(sorted(prefs.SHARP)),
        repeat_share=prefs.REPEAT_SHARE, exact_length_share=prefs.EXACT_LENGTH_SHARE,
        best=prefs.best_mean_gold_reward(heldout), demonstrator=prefs.demonstrator_gold_reward(heldout), sft=sft,
        temperature=prefs.TEMPERATURE, bayes_ceiling=prefs.bayes_ceiling(test),
        gold_scorer=scorer_accuracy(test, prefs.gold_reward), length_scorer=scorer_accuracy(test, prefs.length_score),
        keyword_scorer=scorer_accuracy(test, prefs.keyword_score))


def _instructions_card() -> str:
    from labkit.world import tasks

    example = tasks.task_example("classify", "train", 0)
    return render_card(
        "instructions", counts={s: n * len(tasks.CATEGORIES) for s, n in INSTRUCTION_FILES.items()},
        categories="\n".join(f"| `{c}` | {tasks.NO_ROBOTS[c]} |" for c in tasks.CATEGORIES),
        example_prompt=example["messages"][0]["content"], example_answer=example["answer"])


def _hh_turns(transcript: str) -> list[dict]:
    """Split an hh-rlhf transcript ('\\n\\nHuman: ...\\n\\nAssistant: ...') into role/content turns."""
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + transcript.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("an hh-rlhf transcript must start with 'Human: ' or '\\n\\nHuman: ' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


# An answer must be a whole number below this in size: the correctness reward compares numbers as floats,
# which hold every integer up to 2**53 (about 9.007e15) exactly, and no word problem's answer comes near it.
MAX_ANSWER = 10**15


def load_problems(path: str | Path) -> list[dict]:
    """Word problems from a JSONL file, one ``{"prompt": ..., "answer": ...}`` object per line.

    ``prompt`` is the question: a non-blank string, or a list of role/content messages (strings)
    ending with the user's question. ``answer`` is its final number, a finite whole number below
    :data:`MAX_ANSWER` (10**15) in size, as a JSON number or a string: ``12``, ``"12"``, ``"-3"``,
    ``"1,234"`` (``12.0`` and ``"1e3"`` are whole too). ``"NaN"``, ``"inf"``, ``"1e400"``, ``"3.5"``
    or ``""`` could never match a reply's ``#### N``, so GRPO would train at reward 0 with every
    group alike: a line that is not JSON, a file with no problems, or a problem whose prompt or
    answer is not of these shapes stops loading with a message naming the file, the line and the
    field. String prompts become one user message, the layout GRPO samples from; answers are stored
    as plain digits (``"1,234"`` → ``"1234"``).
    """
    from labkit.world.problems import check_problem_row

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a JSONL file of problems, one JSON object per line "
                                "with 'prompt' and 'answer'")
    rows = []
    for number, row in numbered_jsonl(path):   # a file without rows is a JSONLError naming it
        where = f"{path}, line {number}"
        row = dict(check_problem_row(row, where))
        row["prompt"] = _problem_prompt(row["prompt"], where)
        row["answer"] = _problem_answer(row["answer"], where)
        rows.append(row)
    return rows


def _problem_prompt(prompt, where: str) -> list[dict]:
    """A problem's prompt as the messages GRPO samples from; a ``ValueError`` starting with ``where`` if it is
    neither a non-blank string nor a list of role/content messages ending with the user's question."""
    shape = ("write it as a string, or as a list of {\"role\": ..., \"content\": ...} messages (strings) "
             "ending with the user's question")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: the 'prompt' is blank; {shape}")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(f"{where}: the 'prompt' is a {type(prompt).__name__} ({prompt!r:.40}); {shape}")
    for i, message in enumerate(prompt, start=1):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ValueError(f"{where}: the 'prompt' message {i} is {message!r:.60}, not a role/content message "
                             f"with string values; {shape}")
    if prompt[-1]["role"] != "user":
        raise ValueError(f"{where}: the 'prompt' ends with a {prompt[-1]['role']!r} message, not the user's "
                         f"question; {shape}")
    if not prompt[-1]["content"].strip():
        raise ValueError(f"{where}: the 'prompt' ends with a blank user message; {shape}")
    return prompt


def _problem_answer(answer, where: str) -> str:
    """A problem's answer as plain digits (``"1,234"`` → ``"1234"``); a ``ValueError`` starting with ``where``
    unless it is a finite whole number below :data:`MAX_ANSWER` in size."""
    how = ("give the final answer as a whole number, e.g. \"answer\": \"12\" or \"1,234\", so the "
           "correctness reward can match a reply's '#### N'")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError(f"{where}: the 'answer' is a {type(answer).__name__} ({answer!r:.40}); {how}")
    try:   # Decimal is exact: "1e-400" is not taken for 0, nor 10**15 + 1 for 10**15
        value = Decimal(answer.strip().replace(",", "") if isinstance(answer, str) else answer)
    except InvalidOperation:
        raise ValueError(f"{where}: the 'answer' {answer!r} is not a number; {how}") from None
    if not value.is_finite():
        raise ValueError(f"{where}: the 'answer' {answer!r} is not a finite number; {how}")
    if value != value.to_integral_value():
        raise ValueError(f"{where}: the 'answer' {answer!r} is not a whole number; {how}")
    if abs(value) >= MAX_ANSWER:
        raise ValueError(f"{where}: the 'answer' {answer!r:.40} is too large: answers must be below 10**15 in size "
                         "(the reward compares numbers as floats, exact only that far); check the field")
    return str(int(value))


def from_gsm8k(example: dict) -> dict:
    """A GSM8K row (``question``; ``answer`` = worked solution ending ``#### 72``) as a GRPO problem.

    Returns ``{"prompt": [user message], "answer": "72", "solution": ...}``; the final number is read
    by :func:`labkit.rewards.extract_final_answer`, as the correctness reward will read replies.
    """
    from labkit.rewards import extract_final_answer

    question, solution = example.get("question"), example.get("answer")
    if not isinstance(question, str) or not isinstance(solution, str):
        raise ValueError("a GSM8K example needs string 'question' and 'answer' fields")
    final = extract_final_answer(solution)
    if final is None:
        raise ValueError(f"the GSM8K answer has no final number (expected '#### N' at the end): {solution[-80:]!r}")
    return {"prompt": [{"role": "user", "content": question}], "answer": final, "solution": solution}


def from_hh_rlhf(example: dict) -> dict:
    """Convert an hh-rlhf pair of transcripts into prompt messages and chosen/rejected answers.

    ``{'chosen': '\\n\\nHuman: hi\\n\\nAssistant: hello', 'rejected': '...'}`` becomes
    ``{'prompt': [...messages before the last assistant turn...], 'chosen': [{'role':
    'assistant', 'content': ...}], 'rejected': [...]}``. Multi-turn prompts are kept whole. The two
    transcripts must share that prompt; if they don't, ``ValueError`` says where they differ.
    """
    for key in ("chosen", "rejected"):
        if not isinstance(example.get(key), str):
            raise ValueError(f"an hh-rlhf example needs a string '{key}' transcript")
    return shared_prompt(_hh_turns(example["chosen"]), _hh_turns(example["rejected"]))


def shared_prompt(chosen: list[dict], rejected: list[dict]) -> dict:
    """Split two whole conversations into the prompt they share and their final assistant answers.

    Returns ``{'prompt': [...], 'chosen': [last turn], 'rejected': [last turn]}``. Both must end
    with an assistant turn and repeat the same, non-empty conversation before it; otherwise
    ``ValueError`` says what differs.
    """
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if not turns or turns[-1].get("role") != "assistant":
            raise ValueError(f"the {name} transcript must end with an Assistant turn")
    if chosen[:-1] != rejected[:-1]:
        where = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
                     min(len(chosen), len(rejected)) - 1)
        raise ValueError(f"chosen and rejected transcripts do not share a prompt: they differ at "
                         f"turn {where + 1}; both must repeat the same conversation before the final answer")
    if not chosen[:-1]:
        raise ValueError("chosen and rejected have no prompt before their answers: a preference compares "
                         "two answers to the same request, so the conversations must start with it")
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}
