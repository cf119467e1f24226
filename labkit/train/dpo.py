"""Direct Preference Optimisation with TRL's ``DPOTrainer``: learn from preference pairs directly.

RLHF's objective, maximise E[r] − β·KL(π ‖ π_SFT), has a closed-form optimum
π*(y|x) = π_SFT(y|x)·exp(r(x,y)/β)/Z(x). Read backwards, any policy *implies* a reward
r̂(y) = β·log π(y)/π_SFT(y) (up to β·log Z, the same for every answer to a prompt), and putting
that into the Bradley–Terry likelihood of the labelled pairs gives a loss on the policy itself:

    L = −log σ(β·[log π(y_w)/π_ref(y_w) − log π(y_l)/π_ref(y_l)])        (labkit.losses.dpo_loss)

So there is no reward model, no sampling and no critic: one supervised pass over (prompt, chosen,
rejected) with the frozen SFT policy as the reference. With LoRA (``lora_rank`` ≥ 1) TRL wraps
the policy in adapters and gets the reference by switching them off: one model in memory.

The history logs, per logged step, the loss and TRL's batch statistics: the implicit-reward
``margin`` r̂_w − r̂_l, the share of pairs it ranks right (``accuracy``), and the summed
log-probabilities of the chosen and rejected answers (``logp_chosen``, ``logp_rejected``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm
from trl import DPOConfig, DPOTrainer

from labkit import runtime
from labkit.data import shared_prompt
from labkit.lora import lora_config
from labkit.presets import DPOStageConfig
from labkit.train.common import (PolicyResult, common_args, finish_policy, fit, sort_batches_by_length, total_steps,
                                 trainer_dir)
from labkit.train.reward import pairs_dataset

# TRL's logged batch statistics -> the names in our history
DPO_LOG_KEYS = {"rewards/margins": "margin", "rewards/accuracies": "accuracy", "rewards/chosen": "reward_chosen",
                "rewards/rejected": "reward_rejected", "logps/chosen": "logp_chosen",
                "logps/rejected": "logp_rejected"}


@dataclass
class DPOResult(PolicyResult):
    """A DPO run: the :class:`TrainResult` fields, the trained policy (adapters merged) and its size."""


def _answer_text(answer) -> str:
    return answer if isinstance(answer, str) else " ".join(str(m.get("content", "")) for m in answer)


def check_pairs(pairs: list[dict]) -> list[dict]:
    """The pairs as ``prompt`` / ``chosen`` / ``rejected`` rows, or a ``ValueError`` naming the bad pair.

    A pair without a ``prompt`` may give whole conversations as ``chosen`` and ``rejected``; they
    must then share everything before the final answer (:func:`labkit.data.shared_prompt`). A pair
    whose two answers are the same teaches nothing (its loss is log 2 whatever the policy does)
    and is refused.
    """
    if not pairs:
        raise ValueError("no preference pairs given: DPO needs (prompt, chosen, rejected) rows to learn from")
    rows = []
    for i, pair in enumerate(pairs):
        missing = [key for key in ("chosen", "rejected") if not pair.get(key)]
        if missing:
            raise ValueError(f"preference pair {i} has no {' and no '.join(missing)} answer: each pair needs "
                             "'chosen' and 'rejected' (and a 'prompt')")
        prompt, chosen, rejected = pair.get("prompt"), pair["chosen"], pair["rejected"]
        if not prompt:
            if not (isinstance(chosen, list) and isinstance(rejected, list)):
                raise ValueError(f"preference pair {i} has no prompt: DPO compares two answers to the same "
                                 "request, so give a 'prompt' (messages or text), or whole conversations as "
                                 "'chosen' and 'rejected' that begin with the same turns")
            try:
                split = shared_prompt(chosen, rejected)
            except ValueError as error:
                raise ValueError(f"preference pair {i}: {error}") from None
            prompt, chosen, rejected = split["prompt"], split["chosen"], split["rejected"]
        if _answer_text(chosen).strip() == _answer_text(rejected).strip():
            raise ValueError(f"preference pair {i}: chosen and rejected are the same answer "
                             f"({_answer_text(chosen)!r}); the pair teaches nothing (its DPO loss is log 2 "
                             "whatever the policy does). Drop it or fix its labels")
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def dpo_config(config: DPOStageConfig, n_pairs: int, output_dir: str, seed: int = 0) -> DPOConfig:
    """The TRL ``DPOConfig`` for our stage config: the sigmoid loss at ``config.beta``, no truncation."""
    return DPOConfig(
        beta=config.beta,
        loss_type=["sigmoid"],       # −log σ(β·Δ), the original DPO loss (labkit.losses.dpo_loss)
        max_length=None,             # our conversations are short; never cut an answer
        **common_args(output_dir=output_dir, steps=total_steps(n_pairs, config.batch_size, config.epochs),
                      batch_size=config.batch_size, lr=config.effective_lr,
                      warmup_steps=config.warmup_steps, seed=seed, micro_batches=config.micro_batches),
    )


def pair_lengths(data) -> list[int]:
    """Tokens of each tokenised pair's longer conversation (prompt and answer): what a batch pads it to."""
    return [len(p) + max(len(c), len(r)) for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])]


def train_dpo(policy, tokenizer, pairs: list[dict], config: DPOStageConfig, *, reference=None, seed: int = 0,
              progress: bool = True, callback: Callable | None = None, eval_fn: Callable | None = None,
              eval_every: int = 0) -> DPOResult:
    """Fine-tune ``policy`` with DPO on ``pairs`` (prompt / chosen / rejected, conversational).

    Full fine-tuning (``config.lora_rank == 0``) trains ``policy`` in place against ``reference``,
    a frozen copy of the starting policy (required: TRL would otherwise load one again from disk).
    With LoRA the reference is the same model with its adapters switched off, and the returned
    policy has the adapters merged in. ``callback(history)`` is called at every logged step.
    With ``eval_fn``, ``eval_fn(model) -> dict`` judges the policy before training and every ``eval_every``
    steps (rows in ``evaluations``, their time in ``eval_seconds``).
    """
    rows = check_pairs(pairs)
    if not config.lora_rank and reference is None:
        raise ValueError("full-parameter DPO needs the reference policy: pass reference= a frozen copy of the "
                         "starting (SFT) policy, or set lora_rank >= 1 to use the adapters-off model")
    if reference is not None:
        reference.eval().requires_grad_(False)

    runtime.seed_everything(seed)  # before the trainer is built: with LoRA, building it draws the adapters' weights
    with trainer_dir() as out:
        # With LoRA TRL wraps the policy in adapters (peft_config) and needs no separate reference.
        trainer = DPOTrainer(model=policy, ref_model=None if config.lora_rank else reference,
                             args=dpo_config(config, len(rows), out, seed), train_dataset=pairs_dataset(rows),
                             processing_class=tokenizer,
                             peft_config=lora_config(config.lora_rank) if config.lora_rank else None)
        if config.micro_batches > 1:
            # a pair's two conversations are padded to the micro-batch's longest: sort by the longer
            data = trainer.train_dataset
            sort_batches_by_length(trainer, pair_lengths(data), config.batch_size, trainer.args.max_steps, seed)
        result = fit(trainer, policy, progress=progress, callback=callback, desc="DPO", log_keys=DPO_LOG_KEYS,
                     eval_fn=eval_fn, eval_every=eval_every)
    return finish_policy(trainer, config.lora_rank, result, DPOResult)


@torch.no_grad()
def trl_batch_loss(policy, reference, tokenizer, pairs: list[dict], beta: float) -> dict:
    """TRL's own DPO loss and batch statistics on ``pairs`` as one batch, for checking ours against it.

    Builds a ``DPOTrainer`` (nothing is trained), lets its collator make the batch and its
    ``compute_loss`` score it. Returns ``loss`` and TRL's logged ``rewards/margins``,
    ``logps/chosen`` and ``logps/rejected`` for that batch.
    """
    rows = check_pairs(pairs)
    config = DPOStageConfig(beta=beta, train_pairs=len(rows), batch_size=len(rows))
    with trainer_dir() as out:
        trainer = DPOTrainer(model=policy, ref_model=reference, args=dpo_config(config, len(rows), out),
                             train_dataset=pairs_dataset(rows), processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        batch = {k: v.to(trainer.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        was_training = policy.training
        policy.train()  # TRL files its statistics under "train" (it has switched dropout off)
        loss = float(trainer.compute_loss(trainer.model, batch))
        policy.train(was_training)
        logged = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    return {"loss": loss, **{key: logged[key] for key in ("rewards/margins", "logps/chosen", "logps/rejected")}}


@torch.no_grad()
def implicit_accuracy(policy, reference, tokenizer, pairs: list[dict], beta: float) -> dict:
    """How the policy's implicit reward r̂ = β·log π/π_ref ranks held-out pairs.

    Returns ``accuracy`` (share of pairs with r̂_chosen > r̂_rejected, ties ½, comparable to a reward
    model's pair accuracy), the mean ``margin`` r̂_chosen − r̂_rejected, and the mean change of log π
    from the reference for the chosen and the rejected answers (``chosen_logratio``,
    ``rejected_logratio``; DPO widens the gap between them, and both may fall).
    """
    from labkit.evaluate import pair_logprobs
    from labkit.losses import implicit_reward
    from labkit.metrics import pairwise_accuracy

    pi_chosen, pi_rejected = pair_logprobs(policy, tokenizer, pairs)
    ref_chosen, ref_rejected = pair_logprobs(reference, tokenizer, pairs)
    chosen = implicit_reward(pi_chosen, ref_chosen, beta)
    rejected = implicit_reward(pi_rejected, ref_rejected, beta)
    return {"accuracy": pairwise_accuracy(chosen, rejected), "margin": float((chosen - rejected).mean()),
            "chosen_logratio": float((pi_chosen - ref_chosen).mean()),
            "rejected_logratio": float((pi_rejected - ref_rejected).mean())}


def _answer_groups(samples) -> list[list[int]]:
    """For each prompt of ``samples`` (several answers per prompt), the indices of its distinct non-empty answers."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(samples.prompts):
        groups.setdefault(row["id"], []).append(i)
    return [sorted({samples.answers[i]: i for i in indices if samples.answers[i]}.values())
            for indices in groups.values()]


def pairs_from_samples(samples, scores, n: int, seed: int = 0) -> list[dict]:
    """``n`` preference pairs made of a policy's own answers, labelled by ``scores`` (e.g. a reward model's).

    ``samples`` is a :class:`labkit.evaluate.Samples` (several answers per prompt, consecutive) and
    ``scores`` one number per answer. Each pair takes two *different* answers to the same prompt and
    calls the higher-scored one chosen (ties are skipped); prompts whose answers are all alike give
    no pairs. This is "on-policy" data: the answers the policy itself would give, one round of it.
    """
    import random

    from labkit.world import preferences as prefs

    scores = [float(s) for s in scores]
    candidates = [d for d in _answer_groups(samples) if len(d) >= 2 and len({scores[i] for i in d}) >= 2]
    if not candidates:
        raise ValueError("no prompt has two different answers with different scores: sample more answers per prompt")
    rng = random.Random(f"labkit-onpolicy-pairs/{seed}")
    pairs = []
    while len(pairs) < n:
        a, b = rng.sample(rng.choice(candidates), 2)
        if scores[a] == scores[b]:
            continue
        win, lose = (a, b) if scores[a] > scores[b] else (b, a)
        request = samples.prompts[win]
        place, count = request["place"], request["count"]
        pairs.append({"id": f"onpolicy-{len(pairs)}", "prompt": request["prompt"],
                      "chosen": [{"role": "assistant", "content": samples.answers[win]}],
                      "rejected": [{"role": "assistant", "content": samples.answers[lose]}],
                      "gold_chosen": prefs.gold_reward(place, samples.answers[win], count),
                      "gold_rejected": prefs.gold_reward(place, samples.answers[lose], count)})
    return pairs


def annotated_pairs(samples, n: int, seed: int = 0) -> list[dict]:
    """``n`` pairs of a policy's own answers, each labelled by the world's annotator.

    Like :func:`pairs_from_samples`, each pair is two *different* answers to one prompt of
    ``samples``, but the label is a fresh comparison by the simulated annotator
    (:func:`labkit.world.preferences.label_pair`): Bradley–Terry on the gold reward, so as noisy as
    the world's own pairs and with no reward model's blind spots. This is how InstructGPT and
    Llama 2 collected comparisons round after round: people compared the newest model's answers.
    """
    import random

    from labkit.world import preferences as prefs

    candidates = [d for d in _answer_groups(samples) if len(d) >= 2]
    if not candidates:
        raise ValueError("no prompt has two different answers: sample more answers per prompt")
    rng = random.Random(f"labkit-annotated-pairs/{seed}")
    pairs = []
    for i in range(n):
        a, b = rng.sample(rng.choice(candidates), 2)
        pairs.append(prefs.label_pair(samples.prompts[a], samples.answers[a], samples.answers[b], rng,
                                      f"annotated-{seed}-{i}"))
    return pairs


def label_agreement(pairs: list[dict]) -> float:
    """Share of pairs whose chosen answer really is better under the gold reward (gold ties count ½)."""
    from labkit.metrics import pairwise_accuracy

    return pairwise_accuracy(torch.tensor([p["gold_chosen"] for p in pairs]),
                             torch.tensor([p["gold_rejected"] for p in pairs]))


@dataclass
class OnlineDPOResult(PolicyResult):
    """An online DPO run: the :class:`PolicyResult` fields, plus per round the share of its pairs whose
    label agrees with the gold reward (``label_accuracy``; gold ties count ½)."""

    label_accuracy: list = None


def train_online_dpo(policy, tokenizer, prompts: list[dict], config: DPOStageConfig, *, rounds: int,
                     samples_per_prompt: int, reference, label_pairs: Callable = annotated_pairs, seed: int = 0,
                     max_new_tokens: int = 24, progress: bool = True, callback: Callable | None = None,
                     eval_fn: Callable | None = None, moving_reference: bool = False) -> OnlineDPOResult:
    """Online (iterative) DPO: ``rounds`` times, sample the policy's own answers, label pairs of them, learn.

    Each round samples ``samples_per_prompt`` answers to every row of ``prompts``, makes
    ``config.train_pairs`` labelled pairs of two different answers to one prompt with
    ``label_pairs(samples, n, seed)`` (default :func:`annotated_pairs`, the world's annotator; a
    reward model's labels: :func:`pairs_from_samples` on its scores), and takes one DPO pass over
    them (:func:`train_dpo`). Offline DPO learns from pairs other policies wrote; here the pairs are
    always the current policy's own answers, so the labels say how to improve *this* policy, round
    after round.

    DPO's reference in a round: the frozen ``reference`` (the SFT policy), so that β pulls every round
    back toward it; or, with ``moving_reference``, the policy that starts the round and wrote its
    answers (iterative DPO, as in Xu et al. 2023 and Yuan et al. 2024): each round is then a step of
    limited KL from the last, and the policy can travel further from SFT over the rounds. With LoRA
    (``config.lora_rank``) each round's adapters are merged at its end and the reference is the model
    with them off, which is always the round's starting policy. ``reference`` itself stays the SFT
    policy either way (``eval_fn`` may judge against it).

    The history has every round's DPO log rows, steps counted across rounds, each with its ``round``;
    ``eval_fn(model) -> dict`` judges the policy before the first round and after each (rows in
    ``evaluations`` with ``step``, ``round`` and ``heldout_<key>``, their time in ``eval_seconds``).
    """
    from labkit.evaluate import sample_answers

    if reference is None:
        raise ValueError("online DPO needs the reference policy: pass reference= a frozen copy of the SFT policy")
    began = time.perf_counter()
    history, evaluations, agreement = [], [], []
    steps, eval_seconds, trainable = 0, 0.0, 0

    def judge(round_: int) -> None:
        nonlocal eval_seconds
        if eval_fn is not None:
            start = time.perf_counter()
            evaluations.append({"step": steps, "round": round_,
                                **{f"heldout_{k}": v for k, v in eval_fn(policy).items()}})
            eval_seconds += time.perf_counter() - start

    judge(0)
    round_reference = copy.deepcopy(reference) if moving_reference and not config.lora_rank else reference
    for round_ in tqdm(range(1, rounds + 1), desc="online DPO: rounds", unit="round", disable=not progress):
        round_seed = seed * 1_000 + round_   # each round's answers and pairs are new draws
        if round_reference is not reference:
            round_reference.load_state_dict(policy.state_dict())  # the policy that is about to answer
        samples = sample_answers(policy, tokenizer, prompts, n=samples_per_prompt, seed=round_seed,
                                 max_new_tokens=max_new_tokens, desc=f"round {round_}: sampling")
        pairs = label_pairs(samples, config.train_pairs, round_seed)
        agreement.append(label_agreement(pairs))
        result = train_dpo(policy, tokenizer, pairs, config, reference=round_reference, seed=round_seed, progress=False)
        policy, trainable = result.policy, result.trainable_parameters
        history += [{**row, "step": row["step"] + steps, "round": round_} for row in result.history]
        steps += result.steps
        if callback is not None:
            callback(history)
        judge(round_)
    return OnlineDPOResult(history=history, seconds=time.perf_counter() - began, steps=steps,
                           evaluations=evaluations, eval_seconds=eval_seconds, policy=policy,
                           trainable_parameters=trainable, label_accuracy=agreement)
