"""The stage cache: ``ensure("pretrain")`` returns a trained checkpoint, training it if needed.

Every lab asks for what it needs and gets it from ``LABKIT_HOME``, keyed by preset and config, so
notebooks run in any order after a kernel restart. A missing stage is built with a progress bar
(prerequisites first); checkpoints are written atomically (see :mod:`labkit.checkpoint`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from labkit import checkpoint, runtime, world
from labkit.models import build_model, config_from_size, count_parameters
from labkit.presets import Preset, get_preset
from labkit.tokenizer import train_tokenizer
from labkit.train.pretrain import Packed, pack_documents, pretrain

CODE_VERSION = 3  # bump when a change to training code should invalidate cached checkpoints


@dataclass
class PretrainData:
    """The tokenizer, packed train/validation rows and the corpus statistics for one preset."""

    tokenizer: object
    train: Packed
    val: Packed
    stats: dict  # entropy_floor, true_nll, unigram_entropy (nats/token), tokens, documents


def encode_docs(tokenizer, docs: list[world.Doc]) -> list[list[int]]:
    """Token ids of each document: ``<s>`` + its words + ``</s>``."""
    ids = tokenizer([d.text for d in docs])["input_ids"]
    return [row + [tokenizer.eos_token_id] for row in ids]


def pretrain_data(preset: Preset | None = None, n_train: int | None = None) -> PretrainData:
    """Generate the corpus for ``preset``, train the tokenizer on it and pack it into rows.

    Cached in memory for the session (a few recent calls), so lab experiments that train several
    small models on the same corpus don't regenerate it each time.
    """
    preset = preset or get_preset()
    return dataclasses.replace(_pretrain_data(preset, n_train or preset.n_train_docs))


@functools.lru_cache(maxsize=4)
def _pretrain_data(preset: Preset, n_train: int) -> PretrainData:
    train_docs = world.corpus("train", n_train, preset.world_seed)
    val_docs = world.corpus("validation", preset.n_val_docs, preset.world_seed)
    tokenizer = train_tokenizer((d.text for d in train_docs), extra_words=world.vocabulary())
    pad = tokenizer.pad_token_id
    return PretrainData(
        tokenizer=tokenizer,
        train=pack_documents(encode_docs(tokenizer, train_docs), preset.model.max_len, pad),
        val=pack_documents(encode_docs(tokenizer, val_docs), preset.model.max_len, pad),
        stats=world.entropy_stats(val_docs, train_docs),
    )


def gap_closed(val_loss: float, stats: dict) -> float:
    """Share of the distance from the unigram entropy down to the floor that a model has covered."""
    return (stats["unigram_entropy"] - val_loss) / (stats["unigram_entropy"] - stats["entropy_floor"])


# ---------------------------------------------------------------------------------------- stages

def _train_pretrain(preset: Preset, progress: bool, callback: Callable | None):
    data = pretrain_data(preset)
    runtime.seed_everything(preset.seed)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    model = build_model(config, seed=preset.seed).to(runtime.device())
    result = pretrain(model, data.train, data.val, preset.pretrain, seed=preset.seed,
                      callback=callback, progress=progress)
    metrics = {
        "val_loss": result.val_loss,
        "train_loss": result.train_loss,
        "entropy_floor": data.stats["entropy_floor"],
        "unigram_entropy": data.stats["unigram_entropy"],
        "true_nll": data.stats["true_nll"],
        "gap_closed": gap_closed(result.val_loss, data.stats),
        "train_seconds": result.seconds,
        "tokens_seen": result.tokens_seen,
        "parameters": count_parameters(model),
    }
    return model, data.tokenizer, metrics, result.history


def _hub_pretrain(preset: Preset, progress: bool, callback: Callable | None):
    """``hub`` preset: the 'pretrained model' is a real one from the Hub, measured on our corpus."""
    from labkit.metrics import nats_per_word
    from labkit.models import load_causal_lm

    runtime.require_hub(preset.hub_model)
    model, tokenizer = load_causal_lm(preset.hub_model)
    val_docs = world.corpus("validation", preset.n_val_docs, preset.world_seed)
    stats = world.entropy_stats(val_docs, world.corpus("train", 2000, preset.world_seed))
    val_loss = nats_per_word(model, tokenizer, [d.text for d in val_docs])
    metrics = {"val_loss": val_loss, "entropy_floor": stats["entropy_floor"],
               "unigram_entropy": stats["unigram_entropy"], "gap_closed": gap_closed(val_loss, stats),
               "parameters": count_parameters(model), "model": str(preset.hub_model),
               "unit": "nats per word (sub-word losses summed per word)"}
    return model, tokenizer, metrics, []


def _pretrain_stage(preset: Preset, progress: bool, callback: Callable | None):
    if preset.hub_model:
        return _hub_pretrain(preset, progress, callback)
    return _train_pretrain(preset, progress, callback)


def sft_rows(preset: Preset, split: str) -> list[dict]:
    """The instruction examples of ``split`` for ``preset`` (``train``, or ``test`` for evaluation)."""
    from labkit.world.tasks import exact_categories, task_mixture, task_split

    if split == "train":
        return task_mixture("train", preset.sft.train_examples, dict(preset.sft.category_weights),
                            seed=preset.world_seed)
    # exact match judges the categories with one exact answer; the preference task has the gold reward
    categories = exact_categories(c for c, weight in preset.sft.category_weights if weight > 0)
    return task_split(split, preset.sft.eval_per_category, seed=preset.world_seed, categories=categories)


def _sft_stage(preset: Preset, progress: bool, callback: Callable | None):
    """Instruction-tune the pretrained model; measure exact match per category before and after,
    and the gold reward of its sampled answers to the held-out alignment prompts."""
    from labkit.evaluate import evaluate_policy
    from labkit.metrics import instruction_scores, score_summary
    from labkit.world import preferences as prefs
    from labkit.models import refresh_embeddings
    from labkit.train.sft import tokens_new_to_the_model, train_sft

    model, tokenizer, _ = checkpoint.load_checkpoint(ensure("pretrain", preset, progress=progress))
    test = sft_rows(preset, "test")
    base = score_summary(instruction_scores(model, tokenizer, test, max_new_tokens=preset.sft.max_new_tokens))
    # Tokens pretraining never showed the model (chat markers, digits, JSON pieces) all collapsed to
    # one direction; give them distinct vectors so fine-tuning can tell them apart (see lab 02).
    refresh_embeddings(model, tokens_new_to_the_model(tokenizer), seed=preset.seed)
    model.train()
    train = sft_rows(preset, "train")
    result = train_sft(model, tokenizer, train, preset.sft, seed=preset.seed,
                       progress=progress, callback=callback)
    scores = instruction_scores(model, tokenizer, test, max_new_tokens=preset.sft.max_new_tokens)
    after = score_summary(scores)
    heldout = prefs.alignment_prompts("heldout")
    judged = evaluate_policy(model, tokenizer, heldout, samples_per_prompt=preset.sft.eval_samples,
                             seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="SFT", progress=progress)
    metrics = {
        "exact_match": float(after.loc["overall", "exact_match"]),
        "json_valid": float(after.loc["classify", "json_valid"]),
        "base_exact_match": float(base.loc["overall", "exact_match"]),
        "base_json_valid": float(base.loc["classify", "json_valid"]),
        "per_category": {c: {"exact_match": float(after.loc[c, "exact_match"]),
                             "base_exact_match": float(base.loc[c, "exact_match"])}
                         for c in after.index if c != "overall"},
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_examples": len(train),
        "test_examples": len(test),
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        "gold_reward": judged.gold_reward,
        "best_gold_reward": prefs.best_mean_gold_reward(heldout),
        "demonstrator_gold_reward": prefs.demonstrator_gold_reward(heldout, seed=preset.world_seed),
        "gold_helpfulness": judged.helpfulness,
        "gold_safety": judged.safety,
        "heldout_answers": len(judged.answers),
    }
    return model, tokenizer, metrics, result.history


def _reward_stage(preset: Preset, progress: bool, callback: Callable | None, policy_pairs: int | None = None):
    """Train the reward model the alignment stages use: on the world's preference pairs and on
    comparisons of the SFT policy's own answers; compare with the Bayes ceilings."""
    from labkit.train.reward import fit_reward_model
    from labkit.world import preferences as prefs

    policy_pairs = preset.reward.policy_pairs if policy_pairs is None else policy_pairs
    fit = fit_reward_model(preset, preset.reward.train_pairs, policy_pairs=policy_pairs, judge_policy_answers=True,
                           progress=progress, callback=callback)
    test, result = fit["test"], fit["result"]
    metrics = {
        "accuracy": fit["accuracy"],
        "bayes_ceiling": fit["bayes_ceiling"],
        "share_of_ceiling": fit["accuracy"] / fit["bayes_ceiling"],
        "policy_accuracy": fit["policy_accuracy"],
        "policy_bayes_ceiling": fit["policy_bayes_ceiling"],
        "policy_pairs": policy_pairs,
        "gold_reward_accuracy": prefs.scorer_accuracy(test, prefs.gold_reward),
        "length_only_accuracy": prefs.scorer_accuracy(test, prefs.length_score),
        "keyword_only_accuracy": prefs.scorer_accuracy(test, prefs.keyword_score),
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_pairs": preset.reward.train_pairs,
        "test_pairs": len(test),
    }
    return fit["model"], fit["tokenizer"], metrics, result.history


def _reward_naive_stage(preset: Preset, progress: bool, callback: Callable | None):
    """The in-distribution reward model: the demonstrators' comparisons only (lab 05 over-optimises it)."""
    return _reward_stage(preset, progress, callback, policy_pairs=0)


STAGES: dict[str, tuple[list[str], Callable]] = {
    # stage -> (prerequisites, trainer(preset, progress, callback) -> (model, tok, metrics, history))
    "pretrain": ([], _pretrain_stage),
    "sft": (["pretrain"], _sft_stage),
    "reward": (["sft"], _reward_stage),
    "reward_naive": (["sft"], _reward_naive_stage),
}


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages available: {', '.join(STAGES)}")


# The preset fields each stage's result depends on (besides its prerequisites' keys), so that e.g.
# changing the SFT settings does not retrain the pretrained model.
STAGE_FIELDS = {
    "pretrain": ["name", "world_seed", "n_train_docs", "n_val_docs", "model", "pretrain", "seed", "hub_model"],
    "sft": ["name", "world_seed", "sft", "seed"],
    "reward": ["name", "world_seed", "reward", "seed"],
    "reward_naive": ["name", "world_seed", "reward", "seed"],
}
assert set(STAGE_FIELDS) == set(STAGES), "every stage needs its STAGE_FIELDS entry"


def stage_key(stage: str, preset: Preset) -> str:
    """A short hash of everything that determines the stage's checkpoint (preset, code version)."""
    settings = dataclasses.asdict(preset)
    blob = json.dumps({"stage": stage, "preset": {name: settings[name] for name in STAGE_FIELDS[stage]},
                       "code": CODE_VERSION,
                       "needs": [stage_key(s, preset) for s in STAGES[stage][0]]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def stage_dir(stage: str, preset: Preset | None = None) -> Path:
    """Where the checkpoint of ``stage`` for ``preset`` lives (it may not exist yet)."""
    _check_stage(stage)
    preset = preset or get_preset()
    return runtime.home() / preset.name / f"{stage}-{stage_key(stage, preset)}"


def ensure(stage: str, preset: Preset | str | None = None, *, progress: bool = True,
           callback: Callable | None = None) -> Path:
    """Return the checkpoint directory of ``stage``, training it (and what it needs) if missing.

    ``callback(history)`` receives the live training history when the stage is trained here.
    """
    _check_stage(stage)
    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    path = stage_dir(stage, preset)
    if checkpoint.is_complete(path):
        return path
    needs, trainer = STAGES[stage]
    for need in needs:
        ensure(need, preset, progress=progress)
    start = time.perf_counter()
    model, tokenizer, metrics, history = trainer(preset, progress, callback)
    metrics["seconds"] = time.perf_counter() - start
    checkpoint.save_checkpoint(path, model, tokenizer, metadata={
        "stage": stage, "preset": preset.name, "key": stage_key(stage, preset),
        "config": dataclasses.asdict(preset), "metrics": metrics, "history": history})
    return path


def load(stage: str, preset: Preset | str | None = None, *, build: bool = True):
    """``(model, tokenizer, metadata)`` of ``stage``; trains it first unless ``build=False``."""
    _check_stage(stage)
    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    path = ensure(stage, preset) if build else stage_dir(stage, preset)
    return checkpoint.load_checkpoint(path, device=runtime.device(), stage=stage)


def metrics(stage: str, preset: Preset | str | None = None) -> dict:
    """The saved metrics and history of a stage (training it if needed), without loading weights."""
    path = ensure(stage, preset)
    return json.loads((path / "labkit.json").read_text())


REPORT_KEYS = {
    "pretrain": ["seconds", "val_loss", "entropy_floor", "unigram_entropy", "train_loss",
                 "gap_closed", "true_nll", "train_seconds", "tokens_seen", "parameters", "model", "unit"],
    "sft": ["seconds", "exact_match", "json_valid", "base_exact_match", "base_json_valid", "per_category",
            "gold_reward", "best_gold_reward", "demonstrator_gold_reward", "gold_helpfulness", "gold_safety",
            "train_seconds", "steps", "train_examples", "test_examples"],
    "reward": ["seconds", "accuracy", "bayes_ceiling", "share_of_ceiling", "policy_accuracy", "policy_bayes_ceiling",
               "gold_reward_accuracy", "length_only_accuracy", "keyword_only_accuracy", "train_seconds", "steps",
               "train_pairs", "policy_pairs", "test_pairs"],
}
REPORT_KEYS["reward_naive"] = REPORT_KEYS["reward"]


def run(stages: list[str], preset: Preset | str | None = None, report_path: str | Path | None = None,
        progress: bool = True) -> dict:
    """Run ``stages`` headless (building prerequisites) and return / write the metrics report.

    Writes ``report_path`` (JSON) and a markdown table beside it (same name, ``.md``).
    """
    for stage in stages:
        _check_stage(stage)
    preset = get_preset(preset) if isinstance(preset, str) or preset is None else preset
    report = {"preset": preset.name, "device": str(runtime.device()), "stages": {}}
    for stage in stages:
        meta = json.loads((ensure(stage, preset, progress=progress) / "labkit.json").read_text())
        report["stages"][stage] = {k: meta["metrics"][k] for k in REPORT_KEYS[stage] if k in meta["metrics"]}
    if report_path is not None:
        report_path = Path(report_path)
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        report_path.with_suffix(".md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict) -> str:
    """The report as a markdown table: one row per stage and metric (nested keys joined by dots)."""
    lines = [f"# labkit pipeline report — preset `{report['preset']}` on {report['device']}", "",
             "| stage | metric | value |", "|---|---|---|"]

    def flat(values: dict, prefix: str = ""):
        for key, value in values.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for stage, values in report["stages"].items():
        for key, value in flat(values):
            shown = f"{value:.4f}" if isinstance(value, float) else (
                f"{value:,}" if isinstance(value, int) else str(value))
            lines.append(f"| {stage} | {key} | {shown} |")
    return "\n".join(lines) + "\n"
