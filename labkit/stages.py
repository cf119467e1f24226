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
from labkit.evaluate import evaluate_policy, evaluate_problems, gold_reward_fn, reward_model_fn, shows_working
from labkit.metrics import instruction_scores, nats_per_word, pairwise_accuracy, score_summary, scorer_accuracy
from labkit.models import build_model, config_from_size, count_parameters, load_causal_lm, refresh_embeddings
from labkit.presets import Preset, get_preset
from labkit.tokenizer import load_tokenizer, train_tokenizer
from labkit.train.dpo import implicit_accuracy, train_dpo
from labkit.train.grpo import train_grpo
from labkit.train.ppo import train_ppo
from labkit.train.pretrain import Packed, pack_documents, pretrain
from labkit.train.reward import pair_scores, policy_comparisons, reward_model_from, train_reward
from labkit.train.sft import tokens_new_to_the_model, train_sft
from labkit.world import preferences as prefs
from labkit.world import problems as word_problems
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
    """``judge(policy) -> dict``: gold (and its two aspects), proxy, KL and win rate vs ``reference`` on the
    held-out prompts.

    Sampling as in the SFT stage's evaluation (its ``max_new_tokens``), ``samples_per_prompt``
    answers per prompt; the same seed at every call, so changes come from the policy alone.
    """
    heldout = prefs.alignment_prompts("heldout")

    def judge(policy) -> dict:
        judged = evaluate_policy(policy, tokenizer, heldout, reference, reward_model=reward_model,
                                 reward_tokenizer=reward_tokenizer, samples_per_prompt=samples_per_prompt, seed=seed,
                                 max_new_tokens=preset.sft.max_new_tokens, progress=False)
        return {"gold": judged.gold_reward, "proxy": judged.proxy_reward, "kl": judged.kl, "win_rate": judged.win_rate,
                "helpfulness": judged.helpfulness, "safety": judged.safety}
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
            callback: Callable | None = None, eval_fn: Callable | None = None, eval_every: int = 0,
            reference=None) -> dict:
    """DPO from the SFT checkpoint on preference ``pairs`` (default: the world's first
    ``config.train_pairs`` training pairs); ``config`` defaults to the preset's.

    Judged like PPO on the held-out prompts (gold reward, win rate and KL vs the SFT policy), plus
    the implicit reward's accuracy on the reward model's held-out pairs beside their Bayes ceiling.
    Returns ``result`` (:class:`~labkit.train.dpo.DPOResult`), ``evaluation`` (the final
    :class:`~labkit.evaluate.PolicyEvaluation`), ``tokenizer``, ``reference`` (the SFT policy) and
    ``metrics`` (the stage's report). The ``dpo`` stage and lab 06's runs call it. ``eval_fn`` (e.g. a
    :func:`heldout_judge`) judges the policy every ``eval_every`` steps while it trains (lab 08's curves);
    ``reference``: the SFT policy if the caller has it loaded already (else it is loaded here).
    """
    config = config or preset.dpo
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    if reference is None:
        reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    if pairs is None:
        pairs = prefs.preference_pairs("train", config.train_pairs, seed=preset.world_seed)
    result = train_dpo(policy, tokenizer, pairs, config, reference=reference, seed=preset.seed, progress=progress,
                       callback=callback, eval_fn=eval_fn, eval_every=eval_every)
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


# ------------------------------------------------------------------------------- GRPO

def add_answer_marker(model, tokenizer, seed: int = 0) -> list[int]:
    """Teach ``tokenizer`` the final-answer marker ``####`` as one new token, and give it a row in ``model``.

    The world's vocabulary has no ``####``; adding it at the end of the vocabulary leaves every
    other token's id (and the pretrained and SFT weights) as they were. The new embedding row is
    drawn like the other tokens new to the model (:func:`labkit.models.refresh_embeddings`).
    Returns the ids added (empty when the tokenizer already knows the marker, e.g. a hub model's
    sub-word tokenizer, which spells it from pieces).
    """
    marker = word_problems.MARKER
    if tokenizer.unk_token_id is None or tokenizer.unk_token_id not in tokenizer(marker, add_special_tokens=False)["input_ids"]:
        return []
    tokenizer.add_tokens([marker])
    model.resize_token_embeddings(len(tokenizer))
    added = [tokenizer.convert_tokens_to_ids(marker)]
    refresh_embeddings(model, added, seed=seed)
    return added


def problem_rows(preset: Preset, split: str, n: int | None = None) -> list[dict]:
    """Word problems of ``split``: the sft_math stage's demonstrations for ``train``
    (``preset.sft_math.worked_share`` of them with working), the held-out problems for ``test``."""
    config = preset.sft_math
    if split == "train":
        return word_problems.problems("train", n or config.train_problems, seed=preset.world_seed,
                                      worked_share=config.worked_share)
    return word_problems.problems("test", n or config.eval_problems, seed=preset.world_seed)


def train_sft_math_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Teach the SFT policy the word problems from imperfect demonstrators (most skip the working);
    measure its held-out accuracy: the starting point GRPO must beat."""
    config = preset.sft_math
    model, tokenizer, _ = checkpoint.load_checkpoint(inputs["sft"])
    added = add_answer_marker(model, tokenizer, seed=preset.seed)
    test = problem_rows(preset, "test")
    before = evaluate_problems(model, tokenizer, test, max_new_tokens=config.max_new_tokens, seed=preset.seed)
    model.train()
    train = problem_rows(preset, "train")
    sft = dataclasses.replace(preset.sft, train_examples=len(train), epochs=config.epochs, batch_size=config.batch_size,
                              lr=config.lr, warmup_steps=config.warmup_steps)
    result = train_sft(model, tokenizer, train, sft, seed=preset.seed, progress=progress, callback=callback)
    after = evaluate_problems(model, tokenizer, test, max_new_tokens=config.max_new_tokens, seed=preset.seed)
    metrics = {**after.summary(),
               "base_accuracy": before.accuracy,
               "worked_accuracy": float(after.answers.loc[after.answers["sampled"].map(shows_working), "right_sampled"].mean())
               if after.worked_share else None,
               "bare_accuracy": float(after.answers.loc[~after.answers["sampled"].map(shows_working), "right_sampled"].mean())
               if after.worked_share < 1 else None,
               "demonstrations_worked_share": sum(shows_working(r["messages"][-1]["content"]) for r in train) / len(train),
               "train_problems": len(train), "test_problems": len(test), "added_tokens": len(added),
               "train_seconds": result.seconds, "steps": result.steps}
    return StageOutput(model, tokenizer, metrics, result.history)


def run_grpo(preset: Preset, start_dir: Path, config=None, *, reward_funcs: list | None = None,
             reward_weights: list[float] | None = None, progress: bool = False, callback: Callable | None = None) -> dict:
    """GRPO from the checkpoint in ``start_dir`` (the ``sft_math`` policy) on the training word problems.

    ``reward_funcs`` default to ``[labkit.rewards.correctness_reward]`` (``reward_weights``: see
    :func:`~labkit.train.grpo.train_grpo`); ``config`` to the preset's.
    The policy is judged before and after on the held-out problems, never trained on. Returns
    ``result`` (:class:`~labkit.train.grpo.GRPOResult`), ``before`` and ``after``
    (:class:`~labkit.evaluate.ProblemEvaluation`), ``tokenizer`` and ``metrics`` (the stage's
    report). The ``grpo`` stage and lab 07's runs call it.
    """
    from labkit.rewards import correctness_reward

    config = config or preset.grpo
    reward_funcs = reward_funcs or [correctness_reward]
    policy, tokenizer, _ = checkpoint.load_checkpoint(start_dir, device=runtime.device())
    test = problem_rows(preset, "test", config.eval_problems)
    max_new = preset.sft_math.max_new_tokens
    before = evaluate_problems(policy, tokenizer, test, max_new_tokens=max_new, seed=preset.seed)
    # Training prompts: the sft_math demonstrations' problems come first in the train split, so GRPO's
    # problems start after them (new problems, same distribution; the answers are never shown).
    train = word_problems.problems("train", config.steps * config.prompts_per_step, seed=preset.world_seed,
                                   start=preset.sft_math.train_problems)
    result = train_grpo(policy, tokenizer, train, reward_funcs, config, reward_weights=reward_weights, seed=preset.seed,
                        progress=progress, callback=callback)
    after = evaluate_problems(result.policy, tokenizer, test, max_new_tokens=max_new, seed=preset.seed)
    zero = [h["zero_std_share"] for h in result.history if "zero_std_share" in h]
    metrics = {
        "accuracy": after.accuracy, "sft_accuracy": before.accuracy,
        "sampled_accuracy": after.sampled_accuracy, "sft_sampled_accuracy": before.sampled_accuracy,
        "worked_share": after.worked_share, "sft_worked_share": before.worked_share,
        "length": after.length, "sft_length": before.length,
        "zero_std_share": sum(zero) / len(zero) if zero else None,
        "train_seconds": result.seconds, "seconds_per_step": result.seconds / max(1, result.steps),
        "steps": result.steps, "trainable_parameters": result.trainable_parameters,
        "group_size": config.group_size, "prompts_per_step": config.prompts_per_step, "eps": config.eps,
        "beta": config.beta, "iterations": config.iterations, "lora_rank": config.lora_rank, "test_problems": len(test),
        "rewards": [getattr(f, "__name__", str(f)) for f in reward_funcs], "reward_weights": reward_weights,
    }
    return {"result": result, "before": before, "after": after, "tokenizer": tokenizer, "metrics": metrics}


def train_grpo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Train the word-problem policy with GRPO on the exact-answer reward; judge it on held-out problems."""
    run = run_grpo(preset, inputs["sft_math"], progress=progress, callback=callback)
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
    Stage("sft_math", needs=("sft",), fields=("name", "world_seed", "sft_math", "seed"),
          report=("seconds", "accuracy", "sampled_accuracy", "worked_share", "length", "base_accuracy",
                  "worked_accuracy", "bare_accuracy", "demonstrations_worked_share", "train_seconds", "steps",
                  "train_problems", "test_problems"),
          train=train_sft_math_stage),
    Stage("grpo", needs=("sft_math",), fields=("name", "world_seed", "sft_math", "grpo", "seed"),
          report=("seconds", "accuracy", "sft_accuracy", "sampled_accuracy", "sft_sampled_accuracy", "worked_share",
                  "sft_worked_share", "length", "sft_length", "zero_std_share", "train_seconds", "seconds_per_step",
                  "steps", "trainable_parameters", "group_size", "prompts_per_step", "eps", "beta", "iterations",
                  "lora_rank"),
          train=train_grpo_stage),
]}
