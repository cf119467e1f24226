"""Reward modelling with TRL's ``RewardTrainer``: a scalar score learned from pairwise preferences.

The reward model is the SFT model with its language-model head replaced by a linear layer that
outputs one number (``AutoModelForSequenceClassification`` with ``num_labels=1``); the score of a
conversation is that number at its last token. Training maximises the Bradley–Terry likelihood
that the chosen response scores above the rejected one: loss = −log σ(r_chosen − r_rejected).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import datasets
import torch
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig, RewardTrainer

from labkit import runtime
from labkit.metrics import pairwise_accuracy
from labkit.presets import RewardStageConfig
from labkit.tokenizer import END
from labkit.train.sft import TrainResult, _History, quiet_train


def reward_model_from(path: str | Path):
    """Load a causal-LM checkpoint as a reward model: same backbone, a fresh scalar head (``score``)."""
    # The load report would only say that `score` is new, as intended; labkit keeps transformers
    # quiet (runtime.quiet_third_party).
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1)
    return model.to(runtime.device())


def pairs_dataset(pairs: list[dict]) -> datasets.Dataset:
    """Conversational prompt / chosen / rejected columns, as ``RewardTrainer`` reads them."""
    return datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])


def train_reward(model, tokenizer, pairs: list[dict], config: RewardStageConfig, *, seed: int = 0,
                 progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Fit ``model`` (a sequence-classification model with one label) to ``pairs`` in place."""
    runtime.seed_everything(seed)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    steps = max(1, round(config.epochs * -(-len(pairs) // config.batch_size)))
    recorder = _History(callback, progress, desc="reward model")
    with tempfile.TemporaryDirectory(prefix="labkit-rm-") as out:
        args = RewardConfig(
            output_dir=out, max_steps=steps, per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr, lr_scheduler_type="linear", warmup_steps=config.warmup_steps,
            weight_decay=0.0, logging_steps=max(1, steps // 40), save_strategy="no", report_to="none",
            disable_tqdm=True, seed=seed, data_seed=seed, dataloader_num_workers=0,
            use_cpu=runtime.device().type == "cpu", max_length=None,
            eos_token=END if END in tokenizer.get_vocab() else None)
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs_dataset(pairs),
                                processing_class=tokenizer, callbacks=[recorder])
        seconds = quiet_train(trainer)
    model.eval()
    return TrainResult(history=recorder.history, seconds=seconds, steps=trainer.state.global_step)


@torch.no_grad()
def score(model, tokenizer, prompts: list[list[dict]], responses: list[list[dict]], batch_size: int = 128) -> torch.Tensor:
    """The reward model's score of each (prompt, response) conversation, as a 1-D float tensor."""
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(p + r, tokenize=False) for p, r in zip(prompts, responses)]
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        scores.append(model(**batch).logits[:, 0].float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def pair_scores(model, tokenizer, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and of the rejected response of every pair."""
    prompts = [p["prompt"] for p in pairs]
    return (score(model, tokenizer, prompts, [p["chosen"] for p in pairs]),
            score(model, tokenizer, prompts, [p["rejected"] for p in pairs]))


def calibration_table(model, tokenizer, pairs: list[dict], bins: int = 10, seed: int = 0):
    """How well the reward model's Bradley–Terry probabilities match the labels.

    Each pair is shown in a random order (a, b); the model predicts P(a ≻ b) = σ(s_a − s_b). Per bin
    of predictions: the mean prediction, the share of pairs where a was the chosen one, and the
    mean *true* probability from the gold reward. A calibrated model sits on the diagonal.
    """
    import pandas as pd

    chosen, rejected = pair_scores(model, tokenizer, pairs)
    flip = torch.rand(len(pairs), generator=torch.Generator().manual_seed(seed)) < 0.5
    a_score = torch.where(flip, rejected, chosen)
    b_score = torch.where(flip, chosen, rejected)
    predicted = torch.sigmoid(a_score - b_score)
    outcome = (~flip).float()  # 1 when a is the chosen response
    true_p = torch.tensor([p["p_chosen"] for p in pairs])
    true_p = torch.where(flip, 1 - true_p, true_p)
    table = pd.DataFrame({"predicted": predicted.numpy(), "outcome": outcome.numpy(), "true": true_p.numpy()})
    table["bin"] = pd.cut(table["predicted"], bins=[i / bins for i in range(bins + 1)], include_lowest=True)
    summary = table.groupby("bin", observed=True).agg(predicted=("predicted", "mean"), labels=("outcome", "mean"),
                                                      gold=("true", "mean"), pairs=("outcome", "size"))
    return summary.reset_index(drop=True)


def length_bias(model, tokenizer, probe: list[dict]) -> float:
    """Share of equal-gold-reward pairs where the model scores the longer response higher (0.5 = no bias)."""
    prompts = [p["prompt"] for p in probe]
    long = score(model, tokenizer, prompts, [p["long"] for p in probe])
    short = score(model, tokenizer, prompts, [p["short"] for p in probe])
    return pairwise_accuracy(long, short)


def policy_comparisons(preset, sft_model, tokenizer, split: str, n: int, *, progress: bool = False) -> list[dict]:
    """``n`` annotator-labelled comparisons of the SFT policy's own answers (and wild variants of them).

    The answers are sampled from ``sft_model`` on the ``train`` or ``heldout`` alignment prompts
    (``preset.reward.policy_samples`` per prompt); see :func:`labkit.world.preferences.policy_pairs`.
    """
    from labkit.evaluate import sample_answers
    from labkit.world import preferences as prefs

    prompts = prefs.alignment_prompts(split)
    samples = sample_answers(sft_model, tokenizer, prompts, n=preset.reward.policy_samples,
                             seed=preset.seed + (split != "train"), max_new_tokens=preset.sft.max_new_tokens,
                             progress=progress, desc=f"SFT answers ({split} prompts)")
    return prefs.policy_pairs(list(zip(samples.prompts, samples.answers)), n, split, seed=preset.world_seed)


def fit_reward_model(preset, n_pairs: int, *, policy_pairs: int = 0, judge_policy_answers: bool = False,
                     progress: bool = False, callback: Callable | None = None) -> dict:
    """A reward model from the SFT checkpoint, trained on the first ``n_pairs`` training pairs.

    With ``policy_pairs`` it also learns from that many comparisons of the SFT policy's own answers
    and wild variants of them (:func:`policy_comparisons`), the answers a policy will try once it is
    optimised against the reward model. Returns ``model``, ``tokenizer``, ``result`` (a
    :class:`TrainResult`), the held-out ``test`` pairs, the model's held-out ``accuracy`` and the
    ``bayes_ceiling`` of those pairs; with ``judge_policy_answers`` also ``policy_test`` (held-out
    comparisons of policy-like answers), ``policy_accuracy`` and ``policy_bayes_ceiling``. The
    ``reward`` and ``reward_naive`` stages and lab 04's data-size sweep all call it.
    """
    from labkit import checkpoint, pipeline
    from labkit.tokenizer import load_tokenizer
    from labkit.world import preferences as prefs

    if n_pairs < 1:
        raise ValueError(f"number of training pairs must be >= 1, got {n_pairs}")
    sft_dir = pipeline.ensure("sft", preset, progress=progress)
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


def reward_experiment(n_pairs: int, preset=None, progress: bool = False) -> dict:
    """Lab 04's data-size sweep: held-out accuracy and ceiling of a reward model trained on ``n_pairs``."""
    from labkit.presets import get_preset

    fit = fit_reward_model(preset or get_preset(), n_pairs, progress=progress)
    return {"training pairs": n_pairs, "accuracy": fit["accuracy"], "bayes_ceiling": fit["bayes_ceiling"],
            "seconds": fit["result"].seconds}
