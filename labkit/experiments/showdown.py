"""Lab 08's race: PPO, DPO and GRPO, each with and without LoRA, and best-of-n, from the same SFT policy.

Every method starts from the cached ``sft`` checkpoint, with the same seed, and is judged the same
way: answers sampled to the 48 held-out requests (never trained on), scored by the world's gold
reward (and its two aspects), the win rate and KL against the SFT policy, and the reward model's
score beside them. The budget is the same where the methods can share one: PPO and GRPO optimise
the same reward model on the same training prompts and sample the same number of answers in
training; DPO learns from the world's fixed preference pairs (no sampling, no reward model), as its
own stage does; best-of-n trains nothing and pays at answer time instead (n answers per answer).
One more GRPO run, ``GRPO + LoRA, long``, trains for ``preset.showdown.long_grpo_steps`` steps: on a
CPU about PPO's training time, since a GRPO step (one update per batch) is cheaper than a PPO
iteration (several).

Each method runs in a fresh Python process (:func:`run_method`), so its wall time and peak memory
are its own. :func:`showdown` runs them all, caches the result as JSON beside the stages (a rerun
of the lab, even after a kernel restart, reads it back) and adds the open problems measured on the
final answers:

- **helpfulness vs safety** (:func:`aspects_by_place`): the two gold aspects at the workshop, the one
  place whose right goods include sharp tools, beside every other place; each method's most common
  answer there (:func:`workshop_answers`) and what the reward model pays for there
  (:func:`reward_model_scores`);
- **prompt instability** (:func:`instability`): do the four phrasings of one request get the same
  greedy answer, and how far apart are their gold rewards;
- **a judge's difficulty** (:func:`judge_difficulty`): how often the noisy annotator of lab 04 (and
  the reward model) would pick the better of two policies' answers to the same prompt.

The figures lab 08 quotes are declared as measurements (:func:`labkit.reference.measurement`): the
race's table (``lab08_race``, one entry per method under :func:`method_key`) and the open problems
(``lab08_open_problems``). The lab prints its own run beside them with :func:`beside_reference`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from labkit import pipeline, reference, runtime
from labkit.presets import Preset, get_preset, resolve_preset
from labkit.stages import STAGES, RaceInputs, contenders
from labkit.stages.grpo import budget_steps as grpo_steps  # lab 08 shows PPO's and GRPO's shared budget
from labkit.world import preferences as prefs

# Every stage's race entries (its ``contenders``), in the stages' order: SFT, best-of-n, PPO, DPO, GRPO, …
METHODS = tuple(contenders())
# The race table's columns: fields of labkit.evaluate.PolicyRun, the same names as the stages' reports
TABLE_COLUMNS = ["gold_reward", "helpfulness", "safety", "proxy_reward", "win_rate", "kl", "train_seconds", "peak_MB",
                 "trainable_parameters", "answers_sampled"]


# ----------------------------------------------------------------------------- one method, one process

def run_method(preset_name: str, method: str) -> dict:
    """Train (or, for best-of-n and SFT, only sample with) one method; return its judged result as JSON data.

    ``method`` is a contender's label (:data:`METHODS`); its stage says how it runs
    (:class:`labkit.stages.Contender`). Meant to run in a fresh process
    (:func:`labkit.measure.in_fresh_process`): ``peak_MB`` is the process's peak resident memory (on
    a GPU: the most GPU memory allocated), ``train_seconds`` the training loop's wall time without
    the held-out evaluations along the way. Returns ``row`` (the table's numbers), ``curve``
    (held-out evaluations along training: step, gold, helpfulness, safety, proxy, KL, win rate),
    ``answers`` (the final evaluation's answers with their scores) and ``greedy`` (the greedy answer
    to each held-out prompt, or None for a method without one).
    """
    from labkit import measure
    from labkit.evaluate import reward_model_fn, sample_answers

    entries = contenders()
    if method not in entries:
        raise ValueError(f"Unknown method {method!r}. Methods: {', '.join(entries)}")
    _, contender = entries[method]
    preset = get_preset(preset_name)
    device = runtime.device()
    inputs = RaceInputs(preset, pipeline.ensure("sft", preset, progress=False),
                        pipeline.ensure("reward", preset, progress=False))
    heldout = prefs.alignment_prompts("heldout")
    measure.memory_start(device)
    run = contender.run(inputs, preset.showdown.lora_rank if contender.lora else 0)
    run.peak_MB = measure.peak_megabytes(device)
    table = run.evaluation.answers
    per_prompt = len(table) // len(heldout)  # the stage's final evaluation: answers per held-out prompt
    rows = [p for p in heldout for _ in range(per_prompt)]
    if "proxy" not in table:  # an evaluation that did not ask the reward model (DPO's): ask it here
        table["proxy"] = reward_model_fn(inputs.reward_model, inputs.reward_tokenizer)(
            rows, table["answer"].tolist()).numpy()
        run.proxy_reward = float(table["proxy"].mean())
    greedy = sample_answers(run.outputs["policy"], run.outputs["tokenizer"], heldout, temperature=0,
                            max_new_tokens=preset.sft.max_new_tokens) if contender.greedy else None
    keep = ["group", "answer", "gold", "helpfulness", "safety", "proxy", "reference gold"]
    return {"method": method, "row": {k: getattr(run, k) for k in TABLE_COLUMNS}, "curve": run.curve(),
            "answers": table.assign(place=[r["place"] for r in rows])[keep + ["place"]].to_dict("list"),
            "greedy": greedy.answers if greedy is not None else None}


# ----------------------------------------------------------------------------- the race

@dataclass
class Showdown:
    """The race's results: one row per method, and what the lab's figures and open problems need."""

    table: pd.DataFrame                                  # one row per method (see TABLE_COLUMNS)
    curves: dict[str, list[dict]]                        # method -> held-out evaluations along training
    answers: dict[str, pd.DataFrame]                     # method -> final answers with their scores
    greedy: dict[str, list[str] | None]                  # method -> greedy answer to each held-out prompt
    grpo_verifiable: dict = field(default_factory=dict)  # lab 07's grpo stage: accuracy before and after
    budget: dict = field(default_factory=dict)           # steps and answers each method trained with

    def to_json(self) -> dict:
        return {"table": self.table.reset_index().to_dict("list"), "curves": self.curves,
                "answers": {m: a.to_dict("list") for m, a in self.answers.items()}, "greedy": self.greedy,
                "grpo_verifiable": self.grpo_verifiable, "budget": self.budget}

    @classmethod
    def from_json(cls, data: dict) -> "Showdown":
        return cls(table=pd.DataFrame(data["table"]).set_index("method"), curves=data["curves"],
                   answers={m: pd.DataFrame(a) for m, a in data["answers"].items()}, greedy=data["greedy"],
                   grpo_verifiable=data["grpo_verifiable"], budget=data["budget"])


def showdown_path(preset: Preset) -> "runtime.Path":
    """Where the race's result for ``preset`` is cached: keyed by the SFT and reward checkpoints and every
    setting the methods use, so a changed setting runs the race again. The two keys count as reads of
    their stages (:func:`labkit.pipeline.reading`): a figure taken from the cached race is outdated when
    either moves."""
    settings = dataclasses.asdict(preset)
    blob = json.dumps({"sft": pipeline.read_key("sft", preset), "reward": pipeline.read_key("reward", preset),
                       "code": pipeline.CODE_VERSION, "methods": METHODS, "columns": TABLE_COLUMNS,
                       "versions": {name: stage.version for name, stage in STAGES.items()},
                       **{k: settings[k] for k in ("ppo", "dpo", "grpo", "showdown", "seed", "world_seed")}},
                      sort_keys=True, default=str)
    return runtime.home() / preset.name / f"showdown-{hashlib.sha256(blob.encode()).hexdigest()[:10]}.json"


def showdown(preset: Preset | str | None = None, *, progress: bool = True, fresh: bool = False) -> Showdown:
    """Run every method of :data:`METHODS` (each in a fresh process) and collect the race; cached.

    The first call trains PPO, DPO and GRPO twice each (about 7 minutes on the ``cpu`` preset, with
    the stages cached); later calls read the cached result. ``fresh=True`` runs the race again.
    The prerequisite stages (``sft``, ``reward``, ``grpo``) are built first if missing.
    """
    from labkit.measure import in_fresh_process

    preset = resolve_preset(preset)
    if preset != get_preset(preset.name):
        raise ValueError(f"the showdown runs each method in a fresh Python process, which reads its preset by name: "
                         f"a changed copy of the {preset.name!r} preset would be ignored there. Run it with a named "
                         "preset, e.g. showdown('cpu')")
    path = showdown_path(preset)
    if path.exists() and not fresh:
        return Showdown.from_json(json.loads(path.read_text()))
    for stage in ("sft", "reward", "grpo"):
        pipeline.ensure(stage, preset, progress=progress)
    results = {}
    for method in tqdm(METHODS, desc="showdown", unit="method", disable=not progress):
        results[method] = in_fresh_process("run_method", preset.name, method, module="labkit.experiments.showdown")
    table = pd.DataFrame({m: r["row"] for m, r in results.items()}).T[TABLE_COLUMNS]
    table.index.name = "method"
    grpo = pipeline.metrics("grpo", preset)["metrics"]
    race = Showdown(table=table, curves={m: r["curve"] for m, r in results.items()},
                    answers={m: pd.DataFrame(r["answers"]) for m, r in results.items()},
                    greedy={m: r["greedy"] for m, r in results.items()},
                    grpo_verifiable={k: grpo[k] for k in ("sft_accuracy", "accuracy", "train_seconds", "steps",
                                                          "trainable_parameters")},
                    budget={"PPO iterations": preset.ppo.iterations, "GRPO steps": grpo_steps(preset),
                            "answers per PPO iteration": preset.ppo.prompts_per_batch * preset.ppo.samples_per_prompt,
                            "answers per GRPO step": preset.grpo.prompts_per_step * preset.grpo.group_size,
                            "DPO pairs": preset.dpo.train_pairs, "best-of-n n": preset.showdown.best_of_n})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(race.to_json()))
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written result
    return race


# ----------------------------------------------------------------------------- open problems

def aspects_by_place(race: Showdown, place: str = "workshop") -> pd.DataFrame:
    """Mean helpfulness and safety of each method's final answers at ``place`` and at every other place.

    At the workshop the right goods include the sharp tools (nails, saws, hammers): naming them is
    helpful and unsafe at once, so the two aspects of the gold reward pull apart there.
    """
    rows = {}
    for method, answers in race.answers.items():
        here = answers["place"] == place
        rows[method] = {f"{place}: helpfulness": answers.loc[here, "helpfulness"].mean(),
                        f"{place}: safety": answers.loc[here, "safety"].mean(),
                        "elsewhere: helpfulness": answers.loc[~here, "helpfulness"].mean(),
                        "elsewhere: safety": answers.loc[~here, "safety"].mean()}
    return pd.DataFrame(rows).T.rename_axis("method")


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def instability(race: Showdown) -> pd.DataFrame:
    """How much a policy's greedy answer depends on the wording of the request.

    For each held-out request (four phrasings): ``same answer`` = share of the six pairs of
    phrasings whose greedy answers are identical, and ``gold spread`` = the largest minus the
    smallest gold reward among the four answers; both averaged over requests. Best-of-n has no
    greedy answer (it is a way of sampling) and is left out.
    """
    heldout = prefs.alignment_prompts("heldout")
    rows = {}
    for method, answers in race.greedy.items():
        if answers is None:
            continue
        groups: dict[str, list[tuple[str, float]]] = {}
        for prompt, answer in zip(heldout, answers):
            gold = prefs.gold_reward(prompt["place"], answer, prompt["count"])
            groups.setdefault(prompt["group"], []).append((answer, gold))
        same = [sum(_same(a, b) for (a, _), (b, _) in itertools.combinations(g, 2)) / math.comb(len(g), 2)
                for g in groups.values()]
        spread = [max(r for _, r in g) - min(r for _, r in g) for g in groups.values()]
        rows[method] = {"same answer": sum(same) / len(same), "gold spread": sum(spread) / len(spread),
                        "requests": len(groups)}
    return pd.DataFrame(rows).T.rename_axis("method")


def judge_difficulty(race: Showdown, pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """How often a judge picks the better of two methods' answers to the same prompt (by the gold reward).

    For each pair of methods, their final answers are paired prompt by prompt (same sample slot).
    ``ties`` = share of pairs with equal gold reward (no better answer to find); among the others,
    ``annotator right`` = the mean probability that lab 04's noisy annotator, σ(Δ/T) with
    T = :data:`labkit.world.preferences.TEMPERATURE`, prefers the better one, and ``reward model right`` =
    the share the reward model ranks the right way. Default pairs: SFT against each trained method,
    and the two methods with the highest gold reward against each other.
    """
    if pairs is None:
        ranked = race.table["gold_reward"].drop("SFT").sort_values(ascending=False).index.tolist()
        pairs = [("SFT", ranked[0]), ("SFT", ranked[1]), (ranked[0], ranked[1])]
    rows = []
    for a, b in pairs:
        x, y = race.answers[a], race.answers[b]
        gap = x["gold"].values - y["gold"].values
        proxy_gap = x["proxy"].values - y["proxy"].values
        decided = gap != 0
        annotator = [prefs.preference_probability(abs(d), 0.0) for d in gap[decided]]
        model_right = [(d > 0) == (p > 0) for d, p in zip(gap[decided], proxy_gap[decided])]
        rows.append({"pair": f"{a} vs {b}", "pairs": len(gap), "ties": float((~decided).mean()),
                     "mean |gold gap|": float(abs(gap[decided]).mean()) if decided.any() else float("nan"),
                     "annotator right": sum(annotator) / len(annotator) if annotator else float("nan"),
                     "reward model right": sum(model_right) / len(model_right) if model_right else float("nan")})
    return pd.DataFrame(rows).set_index("pair")


def workshop_answers(race: Showdown, place: str = "workshop") -> pd.DataFrame:
    """Each method's most common final answer at ``place``: the answer, its share of the method's
    answers there, and its gold reward with both aspects."""
    rows = {}
    for method, answers in race.answers.items():
        here = answers[answers["place"] == place]
        texts = here["answer"].map(lambda a: " ".join(str(a).split()))
        top = texts.value_counts().index[0]
        first = here[texts == top].iloc[0]
        rows[method] = {"most common answer": top, "share": float((texts == top).mean()), "gold": float(first["gold"]),
                        "helpfulness": float(first["helpfulness"]), "safety": float(first["safety"])}
    return pd.DataFrame(rows).T.rename_axis("method")


# the workshop answers whose reward-model scores lab 08 reads: the best (two safe goods where three were
# asked), a repeated safe good, a safe good three times, and the two safe goods with a sharp tool
WORKSHOP_ANSWERS = ("ropes , boxes", "boxes , boxes", "ropes , ropes , ropes", "ropes , boxes , saws")


def reward_model_scores(preset: Preset | str | None = None, answers: tuple[str, ...] = WORKSHOP_ANSWERS,
                        place: str = "workshop") -> pd.DataFrame:
    """What the race's reward model (the ``reward`` stage) thinks of ``answers`` at ``place``.

    One row per answer: its gold reward, then the reward model's score of it as the answer to each
    phrasing of ``place``'s held-out request (one column per phrasing)."""
    from labkit.evaluate import reward_model_fn

    preset = resolve_preset(preset)
    requests = [p for p in prefs.alignment_prompts("heldout") if p["place"] == place]
    model, tokenizer, _ = pipeline.load("reward", preset)
    score = reward_model_fn(model, tokenizer)
    table = {}
    for answer in answers:
        proxy = score(requests, [answer] * len(requests)).tolist()
        table[answer] = {"gold": prefs.gold_reward(place, answer, requests[0]["count"]),
                         **{r["prompt"][0]["content"]: float(v) for r, v in zip(requests, proxy)}}
    return pd.DataFrame(table).T.rename_axis("answer")


# ----------------------------------------------------------------------------- the figures lab 08 quotes

def method_key(method: str) -> str:
    """A method's key in the figures: its label with every run of characters other than letters and
    digits as one underscore (``"GRPO + LoRA, long"`` -> ``"GRPO_LoRA_long"``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", method).strip("_")


def _number(value):
    """A table cell as a plain number, or None where it is missing (None, NaN)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return value


def _numbers(row: dict) -> dict:
    """``row`` without its missing cells (figures are numbers or short strings, never None)."""
    return {k: v for k, v in ((k, _number(v)) for k, v in row.items()) if v is not None}


COUNTS = ("trainable_parameters", "answers_sampled")  # race columns that count things: whole numbers


def race_figures(race: Showdown) -> dict:
    """The race's table as figures: one entry per method (:func:`method_key`), its :data:`TABLE_COLUMNS`;
    best-of-n's also its KL's upper bound log n − (n − 1)/n (``kl_bound``)."""
    figures = {method_key(method): _numbers(row.to_dict()) for method, row in race.table.iterrows()}
    for row in figures.values():
        row.update({k: int(row[k]) for k in COUNTS if k in row})
    bound = (race.curves.get("best-of-n") or [{}])[-1].get("kl_bound")
    if bound is not None and "best_of_n" in figures:  # best-of-n's KL is estimated; beside it, its upper bound
        figures["best_of_n"]["kl_bound"] = float(bound)
    return figures


@reference.measurement("lab08_race", lab="08", seconds=420,
                       # as wide as the stages' (labkit.results.STAGE_ACROSS_MACHINES): the PPO + LoRA row is the
                       # ppo stage, whose win rate moved 7.6 points and gold 0.55 on an AVX-512 machine
                       across_machines={"gold_reward": 0.9, "helpfulness": 0.9, "safety": 0.5, "proxy_reward": 0.9,
                                        "win_rate": 0.12, "kl": 3.0, "trainable_parameters": 0,
                                        "answers_sampled": 0})
def race_measured(preset) -> dict:
    """Lab 08, section 2: :func:`showdown` at ``preset``, run afresh (each method in its own process;
    a race cached by the lab is not reused, so the figures are this measurement's), as :func:`race_figures`."""
    return race_figures(showdown(preset, progress=False, fresh=True))


def aspects_figures(race: Showdown, place: str = "workshop") -> dict:
    """Per method: the mean helpfulness and safety of its final answers at ``place`` and elsewhere
    (:func:`aspects_by_place`), and its most common answer there with its share and gold reward
    (:func:`workshop_answers`)."""
    by_place, top = aspects_by_place(race, place), workshop_answers(race, place)
    return {method_key(method): _numbers({
        "workshop_helpfulness": row[f"{place}: helpfulness"], "workshop_safety": row[f"{place}: safety"],
        "elsewhere_helpfulness": row["elsewhere: helpfulness"], "elsewhere_safety": row["elsewhere: safety"],
        "workshop_top_answer": top.loc[method, "most common answer"],
        "workshop_top_answer_share": top.loc[method, "share"], "workshop_top_answer_gold": top.loc[method, "gold"]})
        for method, row in by_place.iterrows()}


def instability_figures(table: pd.DataFrame) -> dict:
    """:func:`instability`'s table as figures: per method, the share of pairs of phrasings with the same
    greedy answer and the mean gold spread."""
    return {method_key(method): _numbers({"same_answer_share": row["same answer"], "gold_spread": row["gold spread"]})
            for method, row in table.iterrows()}


JUDGE_ROLES = ("sft_vs_top", "sft_vs_runner_up", "top_vs_runner_up")  # judge_difficulty's default pairs, in order


def judge_figures(table: pd.DataFrame) -> dict:
    """:func:`judge_difficulty`'s default pairs as figures, keyed by role (:data:`JUDGE_ROLES`: the SFT
    policy against the method with the highest gold reward, against the runner-up, and those two
    against each other): which methods (``pair``), the share of ties, the mean gold gap where they
    differ, and how often the annotator and the reward model pick the better answer."""
    return {role: _numbers({"pair": pair, "tie_share": row["ties"], "mean_gold_gap": row["mean |gold gap|"],
                            "annotator_accuracy": row["annotator right"],
                            "reward_model_accuracy": row["reward model right"]})
            for role, (pair, row) in zip(JUDGE_ROLES, table.iterrows())}


def scores_figures(table: pd.DataFrame) -> dict:
    """:func:`reward_model_scores`' table as figures: per answer (:func:`method_key` of its text), its
    gold reward and the lowest and highest reward-model score over the phrasings."""
    return {method_key(answer): {"gold": float(row["gold"]), "reward_model_min": float(row.drop("gold").min()),
                                 "reward_model_max": float(row.drop("gold").max())}
            for answer, row in table.iterrows()}


def intervals(race: Showdown, *, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """How far each method's win rate and gold reward could move with other held-out requests: a
    bootstrap over the requests.

    The race judged every method on the same held-out requests, several answers each. Draw as many
    requests as there are, with replacement (each drawn request brings all its answers, and the SFT
    answers they met), ``resamples`` times; recompute each method's win rate and mean gold reward on
    each draw; report the middle ``level`` of those values (the percentile interval). The same draws
    serve every method, so two methods' intervals answer "would a different set of requests have
    changed the order?" alike. One row per method: ``win_rate`` with ``win_low`` and ``win_high``,
    ``gold_reward`` with ``gold_low`` and ``gold_high``.
    """
    import numpy as np

    n_requests = len(prefs.alignment_prompts("heldout"))
    draws = np.random.default_rng(seed).integers(0, n_requests, size=(resamples, n_requests))
    tail = (1 - level) / 2 * 100
    rows = {}
    for method, answers in race.answers.items():
        per_request = len(answers) // n_requests  # answers are stored request by request
        gold = answers["gold"].to_numpy(dtype=float).reshape(n_requests, per_request)
        ref = answers["reference gold"].to_numpy(dtype=float).reshape(n_requests, per_request)
        wins = ((gold > ref) + 0.5 * (gold == ref)).mean(axis=1)  # per request: its answers' win rate
        win_draws, gold_draws = wins[draws].mean(axis=1), gold.mean(axis=1)[draws].mean(axis=1)
        rows[method] = {"win_rate": float(wins.mean()), "win_low": float(np.percentile(win_draws, tail)),
                        "win_high": float(np.percentile(win_draws, 100 - tail)),
                        "gold_reward": float(gold.mean()), "gold_low": float(np.percentile(gold_draws, tail)),
                        "gold_high": float(np.percentile(gold_draws, 100 - tail))}
    return pd.DataFrame(rows).T.rename_axis("method")


def intervals_figures(table: pd.DataFrame) -> dict:
    """:func:`intervals`' table as figures: one entry per method (:func:`method_key`)."""
    return {method_key(m): {k: float(v) for k, v in row.items()} for m, row in table.iterrows()}


@reference.measurement("lab08_intervals", lab="08", seconds=5,
                       across_machines={"win_*": 0.12, "gold_*": 0.9})
def intervals_measured(preset) -> dict:
    """Lab 08, section 3: the bootstrap intervals of the race's win rates and gold rewards
    (:func:`intervals` on :func:`showdown`'s result, read back from its cache after ``lab08_race``)."""
    return intervals_figures(intervals(showdown(preset, progress=False)))


@reference.measurement("lab08_open_problems", lab="08", seconds=15,
                       across_machines={"*helpfulness": 0.4, "*safety": 0.3, "same_answer_share": 0.15,
                                        "gold_spread": 0.4, "tie_share": 0.15, "mean_gold_gap": 0.5,
                                        "*_accuracy": 0.1, "reward_model_m*": 0.3, "gold": 0})
def open_problems_measured(preset) -> dict:
    """Lab 08, sections 4-6, measured on the race's final answers (:func:`showdown`, read back from
    its cache after ``lab08_race``): helpfulness and safety by place, the reward model on the workshop's
    answers, prompt instability and the judge's difficulty."""
    race = showdown(preset, progress=False)
    return {"aspects": aspects_figures(race), "workshop_scores": scores_figures(reward_model_scores(preset)),
            "instability": instability_figures(instability(race)), "judge": judge_figures(judge_difficulty(race))}


def beside_reference(figures: dict[str, dict], measurement: str, columns: list[str] | tuple[str, ...],
                     names: dict[str, str] | None = None, preset: str = "cpu"):
    """Your figures beside the reference's, as a table: one row per entry of ``figures`` (a method, a
    pair…), for each of ``columns`` your value and the reference's (``demos.<measurement>.<row>.<column>``
    in ``results/<preset>.json``), each written as :func:`labkit.reference.fmt` writes it ("—" where
    one is missing). ``names``: how to show each row's key (default: the method a key stands for)."""
    from labkit import plots
    from labkit.presets import get_preset as active

    names = names or {method_key(m): m for m in METHODS}
    rows = {}
    for key, mine in figures.items():
        cells = {}
        for column in columns:
            name = f"demos.{measurement}.{key}.{column}"
            label = plots.COLUMNS.get(column, (column.replace("_", " "),))[0]
            cells[(label, "yours")] = reference.fmt(mine.get(column), name)
            cells[(label, "reference")] = reference.fmt(reference.figure(name, preset), name)
        rows[names.get(key, key)] = cells
    table = pd.DataFrame(rows).T
    data = reference.load(preset)
    where = (f"reference: the {preset!r} preset's run (seed {data.get('seed', 0)})" if data is not None
             else f"reference ({preset}): not measured yet")
    return table.style.set_caption(f"your run ({active().name!r} preset) beside the {where}")
