"""Reward modelling with TRL's ``RewardTrainer``: a scalar score learned from pairwise preferences.

The reward model is the SFT model with its language-model head replaced by a linear layer that
outputs one number (``AutoModelForSequenceClassification`` with ``num_labels=1``); the score of a
conversation is that number at its last token, or (``pooling="sum"``, :mod:`labkit.heads`) the sum of
that number over all its tokens. Training maximises the Bradley–Terry likelihood
that the chosen response scores above the rejected one: loss = −log σ(r_chosen − r_rejected).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import datasets
import torch
from transformers import AutoConfig
from trl import RewardConfig, RewardTrainer

from labkit import heads, runtime
from labkit.metrics import pairwise_accuracy
from labkit.models import reward_scores
from labkit.presets import RewardStageConfig
from labkit.tokenizer import END
from labkit.train.common import TrainResult, common_args, fit, sort_batches_by_length, total_steps, trainer_dir


def reward_model_from(path: str | Path, pooling: str = "last"):
    """Load a causal-LM checkpoint as a reward model: same backbone, a fresh scalar head (``score``).

    ``pooling`` (:mod:`labkit.heads`): ``"last"`` scores a conversation by the head at its last token
    (transformers' ``AutoModelForSequenceClassification``); ``"sum"`` adds up the head's score of every
    token, and the checkpoint it saves loads back as such.
    """
    # The load report would only say that `score` is new, as intended; labkit keeps transformers
    # quiet (runtime.quiet_third_party).
    config = AutoConfig.from_pretrained(str(path), num_labels=1)
    if heads.check_pooling(pooling) != "last":
        config.reward_pooling = pooling
    model = heads.reward_model_class(config, pooling).from_pretrained(str(path), config=config)
    return model.to(runtime.device())


def pairs_dataset(pairs: list[dict]) -> datasets.Dataset:
    """Conversational prompt / chosen / rejected columns, as ``RewardTrainer`` reads them."""
    return datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])


def train_reward(model, tokenizer, pairs: list[dict], config: RewardStageConfig, *, seed: int = 0,
                 progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Fit ``model`` (a sequence-classification model with one label) to ``pairs`` in place."""
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    runtime.seed_everything(seed)  # before the trainer is built, as in every TRL stage (see labkit.train.common)
    with trainer_dir() as out:
        args = RewardConfig(max_length=None, eos_token=END if END in tokenizer.get_vocab() else None,
                            **common_args(output_dir=out,
                                          steps=total_steps(len(pairs), config.batch_size, config.epochs),
                                          batch_size=config.batch_size, lr=config.lr,
                                          warmup_steps=config.warmup_steps, seed=seed,
                                          micro_batches=config.micro_batches))
        trainer = RewardTrainer(model=model, args=args, train_dataset=pairs_dataset(pairs), processing_class=tokenizer)
        if config.micro_batches > 1:
            # both rows of a pair (chosen, rejected) are padded to the micro-batch's longest: sort by the longer
            data = trainer.train_dataset
            sort_batches_by_length(trainer, [max(len(c), len(r)) for c, r in zip(data["chosen_ids"], data["rejected_ids"])],
                                   config.batch_size, args.max_steps, seed)
        return fit(trainer, model, progress=progress, callback=callback, desc="reward model")


def trl_batch_loss(model, tokenizer, pairs: list[dict]) -> dict:
    """TRL's own reward loss on ``pairs`` as one batch, for checking ``losses.bradley_terry_loss`` against it.

    Builds a ``RewardTrainer`` the way :func:`train_reward` does (nothing is trained), lets its
    collator make the batch (the chosen conversations, then the rejected) and its ``compute_loss``
    score it. Returns ``loss`` (a float), the ``chosen`` and ``rejected`` scores it saw (on the CPU),
    and the trainer's ``margin`` and ``centring`` settings (none and None: the plain loss).
    """
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    with trainer_dir() as out:
        args = RewardConfig(output_dir=out, max_length=None, eos_token=END if END in tokenizer.get_vocab() else None,
                            bf16=False, report_to="none", use_cpu=runtime.device().type == "cpu")
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=pairs_dataset(pairs))
        batch = trainer.data_collator(list(trainer.train_dataset))
    if batch["input_ids"].shape[0] != 2 * len(pairs):
        raise RuntimeError(f"TRL's batch has {batch['input_ids'].shape[0]} rows for {len(pairs)} pairs")
    batch = {key: value.to(model.device) for key, value in batch.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    model.train(was_training)
    chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).float().cpu(), chunks=2)
    return {"loss": float(loss), "chosen": chosen, "rejected": rejected, "margin": "margin" in batch,
            "centring": args.center_rewards_coefficient}


def pair_scores(model, tokenizer, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and of the rejected response of every pair."""
    prompts = [p["prompt"] for p in pairs]
    return (reward_scores(model, tokenizer, prompts, [p["chosen"] for p in pairs]),
            reward_scores(model, tokenizer, prompts, [p["rejected"] for p in pairs]))


def token_scores(model, tokenizer, prompt: list[dict], answer: list[dict]):
    """Where the score of ``answer`` (to ``prompt``) comes from: a table with a row per answer token.

    ``head`` is the score head's output at that token; ``score so far`` is the answer's score had it
    ended there: for a summed head (:mod:`labkit.heads`) the sum of the heads up to this token (the
    prompt's part is not counted: :func:`labkit.models.reward_scores`), for a last-token head the head
    itself. The last row's ``score so far`` is the score.
    """
    import pandas as pd

    full = tokenizer(tokenizer.apply_chat_template(prompt + answer, tokenize=False), add_special_tokens=False)["input_ids"]
    asked = tokenizer(tokenizer.apply_chat_template(prompt, tokenize=False), add_special_tokens=False)["input_ids"]
    start = len(asked)
    if full[:start] != asked or start >= len(full):
        raise ValueError("the chat template does not render the prompt as the start of the conversation "
                         "(or the answer adds no tokens): the answer's tokens cannot be told apart")
    device = next(model.parameters()).device
    with torch.no_grad():
        hidden = model.base_model(torch.tensor([full], device=device)).last_hidden_state
        head = model.score(hidden)[0, :, 0].float().cpu()
    summed = getattr(model.config, "reward_pooling", "last") == "sum"
    head, tokens = head[start:], tokenizer.convert_ids_to_tokens(full)[start:]
    so_far = head.cumsum(0) if summed else head
    return pd.DataFrame({"token": tokens, "head": head.numpy(), "score so far": so_far.numpy()})


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
    long = reward_scores(model, tokenizer, prompts, [p["long"] for p in probe])
    short = reward_scores(model, tokenizer, prompts, [p["short"] for p in probe])
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
    return prefs.policy_pairs(list(zip(samples.prompts, samples.answers)), n, split, seed=preset.world_seed,
                              edits=preset.reward.policy_edits if split == "train" else 0.0,
                              additions=preset.reward.policy_additions if split == "train" else 0.0)
