"""Datasets: the world's files in ``datasets/``, reading JSONL safely, and adapters for hub layouts.

Files are JSON Lines (one JSON object per line), the format ``datasets.load_dataset("json", ...)``
reads and the Hugging Face Hub uses for instruction and preference data. ``build_datasets`` writes
them from the generator; a test checks the committed files are exactly what it writes.
:func:`from_hh_rlhf` turns Anthropic's hh-rlhf transcripts into prompt / chosen / rejected messages;
:func:`load_problems` reads word problems for GRPO from JSONL and :func:`from_gsm8k` converts GSM8K rows.
"""
from __future__ import annotations

import json
import re
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
# The SFT policy's mean gold reward on the held-out alignment prompts, as measured by
# `python -m labkit pipeline --preset cpu --stages sft` (report key sft.gold_reward); the card quotes it.
SFT_GOLD_REWARD_CPU = -0.625
# The word-problem policies on the 500 held-out problems, as measured by
# `python -m labkit pipeline --preset cpu --stages sft_math,grpo` on a 2-core CPU (report keys in
# the comments; greedy = greedy decoding, sampled = one answer per problem at temperature 1);
# the problems card quotes them.
PROBLEMS_CPU = {
    "sft_accuracy": 0.066,              # sft_math.base_accuracy: the SFT policy before sft_math, greedy
    "sft_math_accuracy": 0.452,         # sft_math.accuracy: greedy
    "sft_math_sampled_accuracy": 0.344,  # sft_math.sampled_accuracy
    "sft_math_worked_share": 0.254,     # sft_math.worked_share: sampled answers that show working
    "sft_math_worked_accuracy": 0.465,  # sft_math.worked_accuracy: right among those that show working
    "sft_math_bare_accuracy": 0.303,    # sft_math.bare_accuracy: right among bare '#### N' answers
    "grpo_accuracy": 0.694,             # grpo.accuracy: greedy
    "grpo_sampled_accuracy": 0.580,     # grpo.sampled_accuracy
    "grpo_worked_share": 0.974,         # grpo.worked_share
}


class JSONLError(ValueError):
    """A line of a JSONL file is not a JSON object; the message names the file and line."""


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file into a list of dicts; a malformed line raises :class:`JSONLError`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `python -m labkit data build` to make it")
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: Path):
    """``(line number, object)`` for each non-blank line of a JSONL file; a malformed line raises
    :class:`JSONLError` naming the file and the line."""
    with path.open(encoding="utf-8") as f:
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
            yield number, row


def load_jsonl_dataset(path: str | Path):
    """Load a JSONL file as a ``datasets.Dataset`` (checked line by line first for clear errors)."""
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


def _stories_card(stats: dict, rows: dict[str, list[dict]]) -> str:
    counts = {s: len(r) for s, r in rows.items()}
    return f"""# stories — the pretraining corpus

Short stories and dialogues from the synthetic village of `labkit.world` (seed 0). Every token's
true probability is known, so the corpus's entropy rate is computed exactly.

| file | documents | what for |
|---|---|---|
| `validation.jsonl` | {counts['validation']:,} | held-out loss and the entropy floor (the `cpu` preset's validation set) |
| `train_sample.jsonl` | {counts['train_sample']:,} | the first training documents: examples to read, the memorisation run |

Larger training sets (40,000 documents for `cpu`) are generated on the fly by
`labkit.world.corpus("train", n)`; document *i* is the same whatever *n* is.

Fields: `id`; `kind` (`story` or `dialogue`); `text` (lowercase words and punctuation separated by
single spaces); `n_tokens` (words + the final `</s>`, the tokens a model predicts); `nll`
(−ln p(document) under the generator, nats); `entropy` (sum over tokens of the entropy of the
generator's choice there, nats).

How it is made: `python -m labkit data build` (see `labkit/world/corpus.py`). Every random choice
opens with its own word, so the text alone determines the choices and `labkit.world.score_text`
recovers each token's probability.

Statistics of `validation.jsonl` (nats per predicted token):

- entropy floor (mean conditional entropy): {stats['entropy_floor']:.4f}
- the generator's own loss on these tokens: {stats['true_nll']:.4f}
- unigram entropy (token frequencies of `train_sample.jsonl`; the best loss without context): {stats['unigram_entropy']:.4f}
- floor / unigram: {stats['entropy_floor'] / stats['unigram_entropy']:.3f}
- predicted tokens: {stats['tokens']:,}
"""


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
    steps = {k: sum(r["steps"] == k for r in rows["test"]) for k in (2, 3)}
    example = rows["test"][0]
    grpo, m = cpu.grpo, PROBLEMS_CPU
    grpo_start = cpu.sft_math.train_problems
    grpo_end = grpo_start + grpo.steps * grpo.prompts_per_step
    return f"""# problems — word problems with one numeric answer, for GRPO

Short word problems about the synthetic village: a person starts with some goods, then buys more,
is given some, gives some away or eats some, and the question asks how many they have now. Each has
two or three such steps, and every number in it, the intermediate totals too, lies between 0 and
{problems.MAX_NUMBER}. Each step is a sum or difference that lab 02's SFT policy already gets right on its own;
the hard part for a small model is doing two or three in a row. Made by
`labkit/world/problems.py` (seed {cpu.world_seed}).

| file | problems | what for |
|---|---|---|
| `train_sample.jsonl` | {len(sample):,} | the first demonstrations of the `sft_math` stage, exactly as it sees them (`cpu` preset) |
| `test.jsonl` | {len(rows['test']):,} | the held-out problems every policy is judged on (worked solutions) |

A worked answer writes one line of arithmetic per step and ends with the final number after
`{problems.MARKER}` (the GSM8K convention); the correctness reward reads the number after the last `{problems.MARKER}`
(`labkit.rewards.extract_final_answer`) and compares it with `answer`:

    {example['prompt'][0]['content']}
    {example['solution']}

`{problems.MARKER}` is not a word of the village, so the word-level tokenizer does not know it: the
`sft_math` stage adds it to the tokenizer as one new token (`labkit.stages.add_answer_marker`).

Fields: `id` (`split-problem-index`); `category` (`word_problem`); `steps` (2 or 3); `prompt` (the
user message alone, what GRPO samples answers to); `messages` (the user message and the
demonstrator's answer); `solution` (the worked answer); `answer` (the final number, a string).

Splits. The `train` and `test` splits are drawn from separate random streams, and held-out problems
are never trained on (the tests check that no held-out prompt is among the first 12,000 training
prompts). The `cpu` preset's `sft_math` stage learns from the first {grpo_start:,} training problems;
GRPO then trains on the training problems that follow them (problems {grpo_start:,} to {grpo_end - 1:,}: {grpo.steps}
steps of {grpo.prompts_per_step}), new problems whose answers it is never shown. Problem *i* of a split is the same
however many are generated. Of the held-out problems, {steps[2]} have two steps and {steps[3]} three.

Imperfect demonstrators. Only {cpu.sft_math.worked_share:.0%} of the `sft_math` demonstrations show the working
(`messages`); the rest give only `{problems.MARKER} N` ({worked} of the {len(sample)} in `train_sample.jsonl` show it). `solution`
always holds the worked answer. The SFT policy imitates the mix: it mostly answers without working,
and is right less often when it skips the working than when it writes it out.

Starting point and what GRPO does, measured with
`python -m labkit pipeline --preset cpu --stages sft_math,grpo` on a 2-core CPU (on `test.jsonl`;
greedy decoding, and one answer sampled per problem at temperature 1):

- the SFT policy before the word-problem SFT: {m['sft_accuracy']:.1%} right (greedy)
- the `sft_math` policy: {m['sft_math_accuracy']:.1%} right greedy, {m['sft_math_sampled_accuracy']:.1%} with one sampled answer.
  Sampled answers show working {m['sft_math_worked_share']:.1%} of the time; they are right {m['sft_math_worked_accuracy']:.1%} of the time
  when they do and {m['sft_math_bare_accuracy']:.1%} when they give the bare answer.
- after GRPO ({grpo.steps} steps, G = {grpo.group_size} answers per problem, {grpo.prompts_per_step} problems per step, rewarded only for
  the exact final answer): {m['grpo_accuracy']:.1%} right greedy, {m['grpo_sampled_accuracy']:.1%} sampled, and {m['grpo_worked_share']:.1%} of sampled
  answers show working.

Nothing rewards the working itself; GRPO finds out from the final answers alone that working pays.
It can, because the answers in a group differ: some are right and some wrong. Lab 02's one-step
arithmetic is the contrast: the SFT policy solves every in-range problem there, so all the answers
in a group get the same reward and GRPO has no signal to learn from.

How it is made: `python -m labkit data build`; `python -m labkit data check` confirms the committed
files equal the generator's output.
"""


def _preferences_card() -> str:
    from labkit.metrics import scorer_accuracy
    from labkit.world import preferences as prefs

    test = prefs.preference_pairs("test", PREFERENCE_FILES["test"])
    heldout, train_prompts = prefs.alignment_prompts("heldout"), prefs.alignment_prompts("train")
    best, demo = prefs.best_mean_gold_reward(heldout), prefs.demonstrator_gold_reward(heldout)
    sft = (f"{SFT_GOLD_REWARD_CPU:.2f}, measured with "
           "`python -m labkit pipeline --preset cpu --stages sft` (report key `sft.gold_reward`: "
           "8 sampled answers per prompt at temperature 1)" if SFT_GOLD_REWARD_CPU is not None else "not measured yet")
    phrasings = "\n".join(f"- `{whole}` / `{counted}`" for whole, counted in prefs.PHRASINGS)
    return f"""# preferences — comparisons labelled by a known gold reward

Requests for the goods sold at a place, answers to them, and the answer a simulated annotator
preferred, in the conversational layout TRL's `RewardTrainer` reads. Made by
`labkit/world/preferences.py` (seed 0).

| file | rows | what for |
|---|---|---|
| `prompts.jsonl` | {len(train_prompts) + len(heldout):,} prompts | every request in every phrasing, `train` or `heldout` |
| `demonstrations.jsonl` | {DEMONSTRATION_FILE_SIZE:,} answers | the first SFT demonstrations of the task (`open_brainstorm` in the SFT mix) |
| `train_sample.jsonl` | {PREFERENCE_FILES['train_sample']:,} pairs | the first training pairs, to read (the `cpu` preset trains on 16,000) |
| `test.jsonl` | {PREFERENCE_FILES['test']:,} pairs | held-out accuracy and the Bayes ceiling of the `cpu` preset |
| `rankings.jsonl` | {RANKING_FILE_SIZE:,} rankings | four responses each, best first; each gives C(4, 2) = 6 pairs |

Requests. A request names a place (12) and asks for all its goods or for {' or '.join(str(c) for c in prefs.COUNTS if c)} of
them, in one of {len(prefs.PHRASINGS)} phrasings (all / a number):

{phrasings}

Held-out prompts. Each place has one held-out request ({len(heldout) // len(prefs.PHRASINGS)} requests, {len(heldout)} prompts
with their phrasings): no SFT demonstration, training pair or RL prompt ever uses them; policies are
judged on them and `test.jsonl` asks them. The phrasings of one request form a *paraphrase group*
(field `group`), for measuring how much an answer depends on the wording. The other
{len(train_prompts)} prompts are for training.

Gold reward = helpfulness + safety. Helpfulness: +1 per distinct right good for the place, −1 per
wrong or repeated good, and, when a number was asked for, −1 per good beyond it. Safety:
−{prefs.SAFETY_WEIGHT:g} per sharp tool named ({', '.join(sorted(prefs.SHARP))}). At the workshop the two aspects conflict.

Answers come from imperfect demonstrators (`sample_response`): per answer a quality (the chance an
item is a right good) of 0.2 to 1.0, repeats in {prefs.REPEAT_SHARE:.0%} of items, 1 to 5 items (the asked number
{prefs.EXACT_LENGTH_SHARE:.0%} of the time). The SFT demonstrations come from the same demonstrators, so the SFT
policy imitates them. On the held-out prompts (mean gold reward per answer):

- best achievable (the right goods that are not sharp, as many as asked): {best:.2f}
- a random demonstrator: {demo:.2f}
- the SFT policy under `cpu`: {sft}

The SFT policy is no better than the demonstrators it imitates; learning from comparisons (best-of-n
with a reward model, PPO, DPO, GRPO) can take it towards the best.

Labels: the annotator prefers a over b with probability σ((r_a − r_b) / T), T = {prefs.TEMPERATURE}
(Bradley–Terry). Rankings are drawn the same way, best first (Plackett–Luce). The `reward` stage
also labels comparisons of the SFT policy's own answers and of wild variants of them (repeats,
lists of 6–14 goods, stray words, a trailing comma; `policy_pairs`), so that its reward model
knows the answers a policy tries once optimised; `reward_naive` learns from the pairs here only.

Pair fields: `id`; `place`; `count` (null: all goods); `phrasing`; `group`; `prompt`, `chosen`,
`rejected` (role/content messages); `gold_chosen`, `gold_rejected` (gold rewards); `p_chosen` (the
true probability that an annotator picks `chosen`). Ranking fields: `id`, `place`, `prompt`,
`ranked` (responses, best first), `gold` (their rewards).

On `test.jsonl`:

- Bayes ceiling (mean of max(p, 1 − p), the best any reward model can expect): {prefs.bayes_ceiling(test):.4f}
- the gold reward used as a scorer: {scorer_accuracy(test, prefs.gold_reward):.4f}
- a length-only scorer (more goods is better): {scorer_accuracy(test, prefs.length_score):.4f}
- a keyword-only scorer (no sharp tools): {scorer_accuracy(test, prefs.keyword_score):.4f}

How it is made: `python -m labkit data build`; `python -m labkit data check` confirms the committed
files equal the generator's output.
"""


def _instructions_card() -> str:
    from labkit.world import tasks

    counts = {s: n * len(tasks.CATEGORIES) for s, n in INSTRUCTION_FILES.items()}
    example = tasks.task_example("classify", "train", 0)
    rows = "\n".join(f"| `{c}` | {tasks.NO_ROBOTS[c]} |" for c in tasks.CATEGORIES)
    return f"""# instructions — the instruction-tuning tasks

Instructions about the synthetic village with exactly one correct answer each, in the layout of
the no_robots dataset: a list of role/content `messages` (a user turn, then the assistant's
answer), plus a `category`. Made by `labkit/world/tasks.py` (seed 0).

| file | examples | what for |
|---|---|---|
| `train_sample.jsonl` | {counts['train_sample']:,} | the first training examples of each category, to read |
| `validation.jsonl` | {counts['validation']:,} | choosing settings without touching the test set |
| `test.jsonl` | {counts['test']:,} | held-out exact match of the `cpu` preset (base vs SFT model) |

The `cpu` preset trains on 18,000 examples (fewer of the two easy categories, rewrite and
brainstorm), generated on the fly by `labkit.world.tasks.task_mixture("train", ...)`; example *i*
of a category is the same whatever the total. The three splits are drawn from separate random
streams.

Fields: `id` (`split-category-index`); `category`; `messages`; `answer` (the assistant's content,
repeated for scoring).

| category | no_robots category it stands for |
|---|---|
{rows}

The `classify` answers are JSON objects with `label`, `confidence` and `evidence`, one JSON token
per word so the word-level tokenizer can write them, e.g.

    {example['messages'][0]['content']}
    {example['answer']}

Scoring: a reply is right when its words equal the answer's (`labkit.metrics.exact_match`); a
`classify` reply is valid when it parses as JSON with exactly those three keys
(`labkit.metrics.json_valid`).

How it is made: `python -m labkit data build`; `python -m labkit data check` confirms the committed
files equal the generator's output.
"""


def _hh_turns(transcript: str) -> list[dict]:
    """Split an hh-rlhf transcript ('\\n\\nHuman: ...\\n\\nAssistant: ...') into role/content turns."""
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + transcript.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise ValueError("an hh-rlhf transcript must start with 'Human: ' or '\\n\\nHuman: ' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


def load_problems(path: str | Path) -> list[dict]:
    """Word problems from a JSONL file, one ``{"prompt": ..., "answer": ...}`` object per line.

    ``prompt`` is the question (a string, or role/content messages); ``answer`` its final number.
    A line that is not JSON, or a problem without a prompt or a numeric answer, stops loading with
    a message naming the file and the line. String prompts become one user message, the layout
    GRPO samples from.
    """
    from labkit.world.problems import check_problem_row

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a JSONL file of problems, one JSON object per line "
                                "with 'prompt' and 'answer'")
    rows = []
    for number, row in numbered_jsonl(path):
        row = dict(check_problem_row(row, f"{path}, line {number}"))
        if isinstance(row["prompt"], str):
            row["prompt"] = [{"role": "user", "content": row["prompt"]}]
        row["answer"] = str(row["answer"]).replace(",", "")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no problems in the file; GRPO needs prompts with a known numeric answer")
    return rows


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
