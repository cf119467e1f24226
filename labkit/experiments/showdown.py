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
  place whose right goods include sharp tools, beside every other place;
- **prompt instability** (:func:`instability`): do the four phrasings of one request get the same
  greedy answer, and how far apart are their gold rewards;
- **a judge's difficulty** (:func:`judge_difficulty`): how often the noisy annotator of lab 04 (and
  the reward model) would pick the better of two policies' answers to the same prompt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from labkit import pipeline, runtime
from labkit.presets import Preset, get_preset, resolve_preset
from labkit.stages import RaceInputs, contenders
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
    setting the methods use, so a changed setting runs the race again."""
    settings = dataclasses.asdict(preset)
    blob = json.dumps({"sft": pipeline.stage_key("sft", preset), "reward": pipeline.stage_key("reward", preset),
                       "code": pipeline.CODE_VERSION, "methods": METHODS, "columns": TABLE_COLUMNS,
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
