"""The pipeline's stages, each declared once: what it needs, what its checkpoint depends on, what it
reports, and the function that trains it.

A stage function takes the preset, the checkpoint directories of its prerequisites (``inputs``,
already built by :mod:`labkit.pipeline`), whether to show progress, and a live-history callback;
it prepares its data, calls its trainer from :mod:`labkit.train`, measures the result and returns
:class:`StageOutput`. Adding a stage means: a function and a :class:`Stage` entry here, its trainer
module in ``labkit/train/``, and its fields in :mod:`labkit.presets` — nothing else.
:mod:`labkit.pipeline` only orchestrates (order, cache, report).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from labkit import checkpoint, runtime, world
from labkit.evaluate import evaluate_policy, gold_reward_fn, reward_model_fn
from labkit.metrics import instruction_scores, nats_per_word, pairwise_accuracy, score_summary, scorer_accuracy
from labkit.models import build_model, config_from_size, count_parameters, load_causal_lm, refresh_embeddings
from labkit.presets import Preset, get_preset
from labkit.tokenizer import load_tokenizer, train_tokenizer
from labkit.train.dpo import implicit_accuracy, train_dpo
from labkit.train.ppo import train_ppo
from labkit.train.pretrain import Packed, pack_documents, pretrain
from labkit.train.reward import pair_scores, policy_comparisons, reward_model_from, train_reward
from labkit.train.sft import tokens_new_to_the_model, train_sft
from labkit.world import preferences as prefs
from labkit.world.tasks import exact_categories, task_mixture, task_split


class StageOutput(NamedTuple):
    """What a stage function returns: the trained model and tokenizer, its metrics and history."""
    model: object
    tokenizer: object
    metrics: dict
    history: list


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once."""
    name: str
    needs: tuple[str, ...]         # prerequisite stages, built first; their checkpoints come in `inputs`
    fields: tuple[str, ...]        # Preset fields the checkpoint depends on (besides its needs' keys)
    report: tuple[str, ...]        # metrics copied into the headless pipeline report
    train: Callable[..., StageOutput]  # train(preset, inputs, progress, callback) -> StageOutput


# ------------------------------------------------------------------------------- pretraining

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
    return StageOutput(model, data.tokenizer, metrics, result.history)


def _hub_pretrain(preset: Preset, progress: bool, callback: Callable | None):
    """``hub`` preset: the 'pretrained model' is a real one from the Hub, measured on our corpus."""
    runtime.require_hub(preset.hub_model)
    model, tokenizer = load_causal_lm(preset.hub_model)
    val_docs = world.corpus("validation", preset.n_val_docs, preset.world_seed)
    stats = world.entropy_stats(val_docs, world.corpus("train", 2000, preset.world_seed))
    val_loss = nats_per_word(model, tokenizer, [d.text for d in val_docs])
    metrics = {"val_loss": val_loss, "entropy_floor": stats["entropy_floor"],
               "unigram_entropy": stats["unigram_entropy"], "gap_closed": gap_closed(val_loss, stats),
               "parameters": count_parameters(model), "model": str(preset.hub_model),
               "unit": "nats per word (sub-word losses summed per word)"}
    return StageOutput(model, tokenizer, metrics, [])


def train_pretrain_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Pretrain the tiny model from scratch (or, under ``hub``, measure a real model on our corpus)."""
    if preset.hub_model:
        return _hub_pretrain(preset, progress, callback)
    return _train_pretrain(preset, progress, callback)


# ------------------------------------------------------------------------------- instruction tuning

def sft_rows(preset: Preset, split: str) -> list[dict]:
    """The instruction examples of ``split`` for ``preset`` (``train``, or ``test`` for evaluation)."""
    if split == "train":
        return task_mixture("train", preset.sft.train_examples, dict(preset.sft.category_weights),
                            seed=preset.world_seed)
    # exact match judges the categories with one exact answer; the preference task has the gold reward
    categories = exact_categories(c for c, weight in preset.sft.category_weights if weight > 0)
    return task_split(split, preset.sft.eval_per_category, seed=preset.world_seed, categories=categories)


def train_sft_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Instruction-tune the pretrained model; measure exact match per category before and after,
    and the gold reward of its sampled answers to the held-out alignment prompts."""
    model, tokenizer, _ = checkpoint.load_checkpoint(inputs["pretrain"])
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
    return StageOutput(model, tokenizer, metrics, result.history)


# ------------------------------------------------------------------------------- reward modelling

def fit_reward_model(preset, sft_dir: Path, n_pairs: int, *, policy_pairs: int = 0, judge_policy_answers: bool = False,
                     progress: bool = False, callback: Callable | None = None) -> dict:
    """A reward model from the SFT checkpoint in ``sft_dir``, trained on the first ``n_pairs`` training pairs.

    With ``policy_pairs`` it also learns from that many comparisons of the SFT policy's own answers
    and wild variants of them (:func:`policy_comparisons`), the answers a policy will try once it is
    optimised against the reward model. Returns ``model``, ``tokenizer``, ``result`` (a
    :class:`TrainResult`), the held-out ``test`` pairs, the model's held-out ``accuracy`` and the
    ``bayes_ceiling`` of those pairs; with ``judge_policy_answers`` also ``policy_test`` (held-out
    comparisons of policy-like answers), ``policy_accuracy`` and ``policy_bayes_ceiling``. The
    ``reward`` and ``reward_naive`` stages and lab 04's data-size sweep all call it.
    """
    if n_pairs < 1:
        raise ValueError(f"number of training pairs must be >= 1, got {n_pairs}")
    train = prefs.preference_pairs("train", n_pairs, seed=preset.world_seed)
    test = prefs.preference_pairs("test", preset.reward.eval_pairs, seed=preset.world_seed)
    policy_test = []
    if policy_pairs or judge_policy_answers:
        sft_model, sft_tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=runtime.device())
        if policy_pairs:
            train = train + policy_comparisons(preset, sft_model, sft_tokenizer, "train", policy_pairs,
                                               progress=progress)
        if judge_policy_answers:
            policy_test = policy_comparisons(preset, sft_model, sft_tokenizer, "heldout",
                                             preset.reward.policy_eval_pairs, progress=progress)
        del sft_model
    runtime.seed_everything(preset.seed)  # the new scalar head's random init: the same in every run
    model, tokenizer = reward_model_from(sft_dir), load_tokenizer(sft_dir)
    result = train_reward(model, tokenizer, train, preset.reward, seed=preset.seed, progress=progress,
                          callback=callback)
    fit = {"model": model, "tokenizer": tokenizer, "result": result, "test": test, "train_pairs": len(train),
           "accuracy": pairwise_accuracy(*pair_scores(model, tokenizer, test)),
           "bayes_ceiling": prefs.bayes_ceiling(test)}
    if policy_test:
        fit.update(policy_test=policy_test, policy_accuracy=pairwise_accuracy(*pair_scores(model, tokenizer, policy_test)),
                   policy_bayes_ceiling=prefs.bayes_ceiling(policy_test))
    return fit


def train_reward_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None,
                       policy_pairs: int | None = None):
    """Train the reward model the alignment stages use: on the world's preference pairs and on
    comparisons of the SFT policy's own answers; compare with the Bayes ceilings."""
    policy_pairs = preset.reward.policy_pairs if policy_pairs is None else policy_pairs
    fit = fit_reward_model(preset, inputs["sft"], preset.reward.train_pairs, policy_pairs=policy_pairs,
                           judge_policy_answers=True, progress=progress, callback=callback)
    test, result = fit["test"], fit["result"]
    metrics = {
        "accuracy": fit["accuracy"],
        "bayes_ceiling": fit["bayes_ceiling"],
        "share_of_ceiling": fit["accuracy"] / fit["bayes_ceiling"],
        "policy_accuracy": fit["policy_accuracy"],
        "policy_bayes_ceiling": fit["policy_bayes_ceiling"],
        "policy_pairs": policy_pairs,
        "gold_reward_accuracy": scorer_accuracy(test, prefs.gold_reward),
        "length_only_accuracy": scorer_accuracy(test, prefs.length_score),
        "keyword_only_accuracy": scorer_accuracy(test, prefs.keyword_score),
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_pairs": preset.reward.train_pairs,
        "test_pairs": len(test),
    }
    return StageOutput(fit["model"], fit["tokenizer"], metrics, result.history)


def train_reward_naive_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """The in-distribution reward model: the demonstrators' comparisons only (lab 05 over-optimises it)."""
    return train_reward_stage(preset, inputs, progress, callback, policy_pairs=0)


# ------------------------------------------------------------------------------- PPO

def heldout_judge(preset: Preset, tokenizer, reference, reward_model, reward_tokenizer, *, samples_per_prompt: int,
                  seed: int = 1) -> Callable:
    """``judge(policy) -> dict``: gold, proxy, KL and win rate vs ``reference`` on the held-out prompts.

    Sampling as in the SFT stage's evaluation (its ``max_new_tokens``), ``samples_per_prompt``
    answers per prompt; the same seed at every call, so changes come from the policy alone.
    """
    heldout = prefs.alignment_prompts("heldout")

    def judge(policy) -> dict:
        judged = evaluate_policy(policy, tokenizer, heldout, reference, reward_model=reward_model,
                                 reward_tokenizer=reward_tokenizer, samples_per_prompt=samples_per_prompt, seed=seed,
                                 max_new_tokens=preset.sft.max_new_tokens, progress=False)
        return {"gold": judged.gold_reward, "proxy": judged.proxy_reward, "kl": judged.kl, "win_rate": judged.win_rate}
    return judge


def verdict(final, heldout: list[dict]) -> dict:
    """An aligned policy's report on the held-out prompts, from its final evaluation against the SFT
    policy: gold reward (the SFT policy's and the best achievable beside it), win rate, KL, the gold
    reward's two aspects, answer length and the share of distinct answers."""
    return {"gold_reward": final.gold_reward, "sft_gold_reward": float(final.answers["reference gold"].mean()),
            "best_gold_reward": prefs.best_mean_gold_reward(heldout), "win_rate": final.win_rate, "kl": final.kl,
            "helpfulness": final.helpfulness, "safety": final.safety, "length": final.length,
            "distinct": final.distinct}


def run_ppo(preset: Preset, sft_dir: Path, reward_dir: Path, config=None, *, progress: bool = False,
            callback: Callable | None = None) -> dict:
    """PPO from the SFT checkpoint against the reward model in ``reward_dir`` (``config``: default the preset's).

    Trains on the training prompts, evaluates on the held-out prompts every ``eval_every`` iterations
    (proxy, gold, KL, win rate vs SFT), and once more at the end with more samples. Returns
    ``result`` (:class:`~labkit.train.ppo.PPOResult`), ``evaluation`` (the final
    :class:`~labkit.evaluate.PolicyEvaluation`), ``tokenizer``, ``metrics`` (the stage's report), and
    the models it loaded: ``reference`` (the SFT policy), ``reward_model`` and ``reward_tokenizer``.
    The ``ppo`` stage and lab 05's run panel both call it.
    """
    config = config or preset.ppo
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(reward_dir, device=device)
    judge = heldout_judge(preset, tokenizer, reference, reward_model, reward_tokenizer,
                          samples_per_prompt=config.eval_samples)
    result = train_ppo(policy, tokenizer, prefs.alignment_prompts("train"), reward_model_fn(reward_model, reward_tokenizer),
                       config, reference=None if config.lora_rank else reference, gold_fn=gold_reward_fn,
                       eval_fn=judge, seed=preset.seed, progress=progress, callback=callback)
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, reward_model=reward_model,
                            reward_tokenizer=reward_tokenizer, samples_per_prompt=config.final_eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="PPO", progress=progress)
    metrics = {
        **verdict(final, heldout),
        "proxy_reward": final.proxy_reward,
        "sft_proxy_reward": float(final.answers["reference proxy"].mean()),
        "train_seconds": result.seconds,
        "rollout_seconds": result.rollout_seconds,
        "update_seconds": result.update_seconds,
        "sampled_tokens": result.sampled_tokens,
        "iterations": result.steps,
        "trainable_parameters": result.trainable_parameters,
        "lora_rank": config.lora_rank,
        "beta": config.beta,
        "eps": config.eps,
        "evaluations": result.evaluations,
    }
    return {"result": result, "evaluation": final, "tokenizer": tokenizer, "metrics": metrics, "reference": reference,
            "reward_model": reward_model, "reward_tokenizer": reward_tokenizer}


def train_ppo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Align the SFT policy with PPO against the reward model; judge it on held-out prompts by the gold reward."""
    run = run_ppo(preset, inputs["sft"], inputs["reward"], progress=progress, callback=callback)
    return StageOutput(run["result"].policy, run["tokenizer"], run["metrics"], run["result"].history)


# ------------------------------------------------------------------------------- DPO

def run_dpo(preset: Preset, sft_dir: Path, config=None, *, pairs: list[dict] | None = None, progress: bool = False,
            callback: Callable | None = None) -> dict:
    """DPO from the SFT checkpoint on preference ``pairs`` (default: the world's first
    ``config.train_pairs`` training pairs); ``config`` defaults to the preset's.

    Judged like PPO on the held-out prompts (gold reward, win rate and KL vs the SFT policy), plus
    the implicit reward's accuracy on the reward model's held-out pairs beside their Bayes ceiling.
    Returns ``result`` (:class:`~labkit.train.dpo.DPOResult`), ``evaluation`` (the final
    :class:`~labkit.evaluate.PolicyEvaluation`), ``tokenizer``, ``reference`` (the SFT policy) and
    ``metrics`` (the stage's report). The ``dpo`` stage and lab 06's runs call it.
    """
    config = config or preset.dpo
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    if pairs is None:
        pairs = prefs.preference_pairs("train", config.train_pairs, seed=preset.world_seed)
    result = train_dpo(policy, tokenizer, pairs, config, reference=reference, seed=preset.seed, progress=progress,
                       callback=callback)
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, samples_per_prompt=config.eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="DPO", progress=progress)
    test = prefs.preference_pairs("test", config.eval_pairs, seed=preset.world_seed)
    implicit = implicit_accuracy(result.policy, reference, tokenizer, test, config.beta)
    metrics = {
        **verdict(final, heldout),
        "implicit_accuracy": implicit["accuracy"],
        "implicit_margin": implicit["margin"],
        "chosen_logratio": implicit["chosen_logratio"],
        "rejected_logratio": implicit["rejected_logratio"],
        "bayes_ceiling": prefs.bayes_ceiling(test),
        "test_pairs": len(test),
        "train_pairs": len(pairs),
        "train_seconds": result.seconds,
        "steps": result.steps,
        "trainable_parameters": result.trainable_parameters,
        "lora_rank": config.lora_rank,
        "beta": config.beta,
    }
    return {"result": result, "evaluation": final, "tokenizer": tokenizer, "metrics": metrics, "reference": reference}


def train_dpo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Align the SFT policy with DPO on the world's preference pairs; judge it on held-out prompts by the gold reward."""
    run = run_dpo(preset, inputs["sft"], progress=progress, callback=callback)
    return StageOutput(run["result"].policy, run["tokenizer"], run["metrics"], run["result"].history)


# ------------------------------------------------------------------------------- the registry

REWARD_REPORT = ("seconds", "accuracy", "bayes_ceiling", "share_of_ceiling", "policy_accuracy",
                 "policy_bayes_ceiling", "gold_reward_accuracy", "length_only_accuracy", "keyword_only_accuracy",
                 "train_seconds", "steps", "train_pairs", "policy_pairs", "test_pairs")

STAGES: dict[str, Stage] = {stage.name: stage for stage in [
    Stage("pretrain", needs=(),
          fields=("name", "world_seed", "n_train_docs", "n_val_docs", "model", "pretrain", "seed", "hub_model"),
          report=("seconds", "val_loss", "entropy_floor", "unigram_entropy", "train_loss", "gap_closed",
                  "true_nll", "train_seconds", "tokens_seen", "parameters", "model", "unit"),
          train=train_pretrain_stage),
    Stage("sft", needs=("pretrain",),
          fields=("name", "world_seed", "sft", "seed"),
          report=("seconds", "exact_match", "json_valid", "base_exact_match", "base_json_valid", "per_category",
                  "gold_reward", "best_gold_reward", "demonstrator_gold_reward", "gold_helpfulness", "gold_safety",
                  "train_seconds", "steps", "train_examples", "test_examples"),
          train=train_sft_stage),
    Stage("reward", needs=("sft",), fields=("name", "world_seed", "reward", "seed"), report=REWARD_REPORT,
          train=train_reward_stage),
    Stage("reward_naive", needs=("sft",), fields=("name", "world_seed", "reward", "seed"), report=REWARD_REPORT,
          train=train_reward_naive_stage),
    Stage("ppo", needs=("sft", "reward"), fields=("name", "world_seed", "ppo", "seed"),
          report=("seconds", "gold_reward", "sft_gold_reward", "best_gold_reward", "win_rate", "kl", "proxy_reward",
                  "sft_proxy_reward", "length", "distinct", "train_seconds", "iterations", "trainable_parameters",
                  "lora_rank", "beta", "eps"),
          train=train_ppo_stage),
    Stage("dpo", needs=("sft",), fields=("name", "world_seed", "dpo", "seed"),
          report=("seconds", "gold_reward", "sft_gold_reward", "best_gold_reward", "win_rate", "kl", "length",
                  "distinct", "implicit_accuracy", "implicit_margin", "chosen_logratio", "rejected_logratio",
                  "bayes_ceiling", "train_seconds", "steps", "train_pairs", "trainable_parameters", "lora_rank",
                  "beta"),
          train=train_dpo_stage),
]}
