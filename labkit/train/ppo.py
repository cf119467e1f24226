"""PPO for a causal language model, written to be read top to bottom (TRL's current releases ship no PPO).

The objective is the RLHF one: maximise E_{y∼π}[r(x, y)] − β·KL(π ‖ π_ref), with π_ref the SFT
policy. Sampling an answer is not differentiable, so the gradient comes from the policy-gradient
theorem: raise the log-probability of tokens whose answers scored better than expected, lower the
others. Each token is an action; the state is the prompt plus the answer so far. One iteration:

1. **roll out** — sample answers to a batch of prompts with ``generate``;
2. **score** — the reward function (a reward model, or a rule) gives each answer one number;
3. **penalise** — every token pays β·(log π − log π_ref), the per-token KL to the reference;
4. **value** — a value head on the policy's last hidden state predicts each state's return;
5. **advantages** — GAE (γ, λ) turns rewards and values into per-token advantages, whitened;
6. **update** — several epochs of minibatches maximise the clipped surrogate
   min(ρA, clip(ρ, 1 − ε, 1 + ε)A), ρ = π_θ/π_old, plus a clipped value loss.

With LoRA (``lora_rank`` ≥ 1) one frozen base serves three roles: the policy (adapters on), the
reference (adapters off, :meth:`peft.PeftModel.disable_adapter`) and the critic's trunk; only the
adapters and the value head train. Devices and processes are handled by ``accelerate``: the same
loop runs on a CPU, a GPU, or several processes (``accelerate launch --num_processes N``). With N
processes each iteration's ``prompts_per_batch`` prompts are shared out (N-th each), every process
samples, scores and computes advantages for its own share, and each minibatch step takes
``minibatch_size / N`` answers from every process while DDP averages the gradients: the same
numbers of answers per iteration and per step, and the same steps, as one process. Two things are
per process: advantages are whitened with the statistics of the process's own answers, and a
loss averages over its own tokens (then DDP averages the N processes' gradients), so the update is
close to, not exactly, one process's on the same answers.

Pure maths (the clip objective, GAE, the KL penalty, whitening) lives in :mod:`labkit.losses`.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from labkit import runtime
from labkit.evaluate import Samples, sample_answers
from labkit.lora import merge_lora, peft_lora
from labkit.losses import (gae_advantages, kl_penalty_rewards, masked_mean, ppo_clip_objective, ppo_value_loss,
                           whiten)
from labkit.presets import PPOStageConfig
from labkit.train.common import TrainResult

RewardFn = Callable[[list[dict], list[str]], torch.Tensor]  # (prompt rows, answers) -> one score per answer


class PolicyWithValue(nn.Module):
    """The policy (a causal LM, perhaps with LoRA adapters) and a value head on its last hidden state.

    The critic shares the policy's trunk, as in the original RLHF code: one forward pass gives the
    next-token logits and V(state) at every position.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at first: the first advantages are the rewards
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1].float()).squeeze(-1)


@dataclass
class Rollout:
    """One batch of sampled answers and everything PPO computes about them.

    Token tensors are (answers, T): answer token t of each row, left-aligned, ``mask`` true on real
    tokens. ``input_ids`` holds [left-padded prompt | answer, right-padded]; answers start at column P.
    """

    rows: list[dict]
    answers: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    prompt_width: int
    scores: torch.Tensor | None = None        # (answers,) the reward function's score
    logprobs: torch.Tensor | None = None      # log π_old(y_t) at sampling time
    ref_logprobs: torch.Tensor | None = None  # log π_ref(y_t)
    values: torch.Tensor | None = None        # V_old(s_t)
    rewards: torch.Tensor | None = None       # per-token rewards (KL penalty + score at the end)
    advantages: torch.Tensor | None = None    # whitened GAE advantages
    returns: torch.Tensor | None = None       # value targets

    @property
    def answer_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width:]


def pack_rollout(samples: Samples, pad_id: int, device) -> Rollout:
    """Lay sampled answers out as one batch: prompts left-padded to P, answers right-padded after them.

    Position ids count real tokens only (as ``generate`` does with a left-padded batch), so the
    log-probabilities computed here are those of the sampler.
    """
    P = max(len(p) for p in samples.prompt_ids)
    T = max(len(a) for a in samples.answer_ids)
    n = len(samples.answers)
    ids = torch.full((n, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((n, P + T), dtype=torch.long)
    for i, (p, a) in enumerate(zip(samples.prompt_ids, samples.answer_ids)):
        ids[i, P - len(p):P] = torch.tensor(p)
        ids[i, P:P + len(a)] = torch.tensor(a)
        attn[i, P - len(p):P + len(a)] = 1
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    return Rollout(rows=samples.prompts, answers=samples.answers, input_ids=ids.to(device),
                   attention_mask=attn.to(device), position_ids=positions.to(device),
                   mask=attn[:, P:].bool().to(device), prompt_width=P)


def token_logprobs(logits: torch.Tensor, rollout: Rollout, index=slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | x, y_<t) of each answer token and the entropy of π at each step, both (answers, T).

    The logits at column P − 1 + t predict answer token t.
    """
    P, T = rollout.prompt_width, rollout.mask.shape[1]
    step_logits = logits[:, P - 1:P - 1 + T].float()
    logp_all = step_logits.log_softmax(-1)
    logp = logp_all.gather(-1, rollout.answer_ids[index][..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _forward(model, rollout: Rollout, index=slice(None)):
    return model(rollout.input_ids[index], rollout.attention_mask[index], rollout.position_ids[index])


def check_scores(scores, n: int) -> torch.Tensor:
    """The reward function's output as a float tensor of shape (n,), or a clear error."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.shape != (n,):
        raise ValueError(f"The reward function returned shape {tuple(scores.shape)} for {n} answers; it must return "
                         f"one number per answer, shape ({n},). PPO stopped; any saved checkpoint is unchanged.")
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"The reward function returned NaN or infinite scores for {len(bad)} of {n} answers "
                         f"(first at index {bad[0]}). PPO stopped; any saved checkpoint is unchanged.")
    return scores


@dataclass
class PPOResult(TrainResult):
    """A finished PPO run: the history (one row per iteration) and the trained policy."""

    policy: object = None                 # the trained causal LM (LoRA adapters merged into it)
    trainable_parameters: int = 0         # parameters the optimiser updated (value head included)
    total_parameters: int = 0             # parameters held in memory by policy, critic and reference
    sampled_tokens: int = 0               # answer tokens generated in rollouts
    rollout_seconds: float = 0.0          # time spent sampling
    update_seconds: float = 0.0           # time spent in PPO updates


def train_ppo(policy, tokenizer, prompts: list[dict], reward_fn: RewardFn, config: PPOStageConfig, *,
              reference=None, gold_fn: RewardFn | None = None, eval_fn: Callable | None = None, seed: int = 0,
              progress: bool = True, callback: Callable | None = None) -> PPOResult:
    """Optimise ``policy`` (a causal LM, trained in place) with PPO on ``prompts`` scored by ``reward_fn``.

    ``prompts`` are rows with role/content ``prompt`` messages. ``reference`` is the frozen policy
    of the KL penalty (default: a copy of ``policy`` as it is now); with LoRA (``config.lora_rank``
    >= 1) it is not used: the base with its adapters off is the reference, exactly the SFT policy. ``gold_fn`` (optional) scores the same answers with the truth, for the log only.
    ``eval_fn(policy) -> dict`` is called every ``config.eval_every`` iterations and at the end; its
    numbers join that iteration's history row with a ``heldout_`` prefix; it is also called once
    before training (a history row with ``step`` 0 and only those numbers). ``callback(history)``
    gets the history after every iteration (live curves).

    With several processes (``accelerate launch``) each samples its share of every batch (see the
    module's docstring); a history row's training numbers (``proxy``, ``kl``, losses, ``train_gold``)
    are then those of this process's share, while ``eval_fn`` judges the same policy in every process.
    """
    from accelerate import Accelerator

    runtime.seed_everything(seed)
    accelerator = Accelerator(cpu=runtime.device().type == "cpu")
    share_among_processes(config, accelerator.num_processes)
    if config.lora_rank:
        lm, reference, lr = peft_lora(policy, config.lora_rank), None, config.lora_lr
    else:
        lm, lr = policy, config.lr
        if reference is None:
            reference = copy.deepcopy(policy)
        reference.requires_grad_(False).eval().to(accelerator.device)
    model = PolicyWithValue(lm)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    # The reference's forward pass: a separate frozen model, or the same one with its adapters off.
    ref_context = unwrapped.lm.disable_adapter if reference is None else nullcontext
    ref_model = reference if reference is not None else unwrapped.lm
    pad = tokenizer.pad_token_id
    order = torch.Generator().manual_seed(seed)  # the same prompt order in every process

    result = PPOResult(trainable_parameters=sum(p.numel() for p in trainable),
                       total_parameters=sum(p.numel() for p in unwrapped.parameters())
                       + (sum(p.numel() for p in reference.parameters()) if reference is not None else 0))
    if eval_fn is not None:  # where the policy starts (iteration 0), for the curves
        start_row = {"step": 0, **{f"heldout_{k}": v for k, v in eval_fn(unwrapped.lm).items()}}
        result.evaluations.append(start_row)
        result.history.append(dict(start_row))
        if callback is not None:
            callback(result.history)
    bar = tqdm(range(config.iterations), desc="PPO", unit="iter", disable=not progress or not accelerator.is_main_process)
    start = time.perf_counter()
    batch = []  # prompt rows still to use in this pass over the prompts
    for iteration in bar:
        # 1. Roll out: sample answers to the next prompts with the current policy.
        while len(batch) < config.prompts_per_batch:
            batch += [prompts[i] for i in torch.randperm(len(prompts), generator=order).tolist()]
        rows, batch = batch[:config.prompts_per_batch], batch[config.prompts_per_batch:]
        rows = rows[accelerator.process_index::accelerator.num_processes]  # this process's share
        t0 = time.perf_counter()
        samples = sample_answers(unwrapped.lm, tokenizer, rows, n=config.samples_per_prompt,
                                 seed=seed * 1_000_003 + iteration * 101 + accelerator.process_index,
                                 max_new_tokens=config.max_new_tokens)
        result.rollout_seconds += time.perf_counter() - t0
        rollout = pack_rollout(samples, pad, accelerator.device)
        result.sampled_tokens += int(rollout.mask.sum())
        t0 = time.perf_counter()
        # 2. Score each answer. 3–5. Old log-probs and values, the KL penalty, GAE.
        rollout.scores = check_scores(reward_fn(rollout.rows, rollout.answers), len(rollout.answers)).to(accelerator.device)
        make_advantages(model, ref_model, ref_context, rollout, config)
        # 6. Update: several epochs of minibatches on this batch.
        stats = ppo_update(model, optimizer, accelerator, rollout, config, order)
        result.update_seconds += time.perf_counter() - t0

        row = {"step": iteration + 1, **rollout_stats(rollout, config.beta), **stats}
        if gold_fn is not None:
            row["train_gold"] = float(check_scores(gold_fn(rollout.rows, rollout.answers), len(rollout.answers)).mean())
        if eval_fn is not None and ((iteration + 1) % config.eval_every == 0 or iteration + 1 == config.iterations):
            t0 = time.perf_counter()
            judged = {f"heldout_{k}": v for k, v in eval_fn(unwrapped.lm).items()}
            result.eval_seconds += time.perf_counter() - t0
            row.update(judged)
            result.evaluations.append({"step": iteration + 1, **judged})
        result.history.append(row)
        bar.set_postfix(proxy=f"{row['proxy']:.2f}", kl=f"{row['kl']:.2f}")
        if callback is not None:
            callback(result.history)
    result.seconds = time.perf_counter() - start
    result.steps = config.iterations
    lm = accelerator.unwrap_model(model).lm
    lm.eval()
    result.policy = merge_lora(lm) if config.lora_rank else lm
    return result


@torch.no_grad()
def make_advantages(model, ref_model, ref_context, rollout: Rollout, config: PPOStageConfig) -> None:
    """Fill in the rollout's old log-probs, values, reference log-probs, per-token rewards, advantages, returns."""
    model.eval()
    logits, values = _forward(model, rollout)
    rollout.logprobs, _ = token_logprobs(logits, rollout)
    rollout.values = values[:, rollout.prompt_width - 1:-1] * rollout.mask
    with ref_context():
        ref_logits = ref_model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                               position_ids=rollout.position_ids).logits
    rollout.ref_logprobs, _ = token_logprobs(ref_logits, rollout)
    rollout.rewards, _ = kl_penalty_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, rollout.mask,
                                            config.beta)
    advantages, rollout.returns = gae_advantages(rollout.rewards, rollout.values, rollout.mask, config.gamma, config.lam)
    rollout.advantages = whiten(advantages, rollout.mask)
    model.train()


def share_among_processes(config: PPOStageConfig, processes: int) -> None:
    """Raise a clear error unless ``processes`` can share every batch and minibatch equally.

    Unequal shares would give the processes different numbers of minibatch steps, and DDP, which
    averages gradients at each step, would wait forever for the missing ones.
    """
    for name in ("prompts_per_batch", "minibatch_size"):
        if getattr(config, name) % processes:
            raise ValueError(f"PPOStageConfig.{name} = {getattr(config, name)} cannot be shared equally by "
                             f"{processes} processes; choose a number of processes that divides it")


def ppo_update(model, optimizer, accelerator, rollout: Rollout, config: PPOStageConfig,
               generator: torch.Generator) -> dict:
    """``ppo_epochs`` passes of minibatch steps on the clipped objective; returns the mean statistics."""
    n, totals, steps = len(rollout.answers), {}, 0
    size = config.minibatch_size // accelerator.num_processes  # each process's part of a minibatch
    for _ in range(config.ppo_epochs):
        for index in torch.randperm(n, generator=generator).split(size):
            index = index.to(rollout.input_ids.device)
            mask = rollout.mask[index]
            logits, values = _forward(model, rollout, index)
            logp, entropy = token_logprobs(logits, rollout, index)
            values = values[:, rollout.prompt_width - 1:-1]
            ratio = torch.exp(logp - rollout.logprobs[index])
            advantages = rollout.advantages[index]
            policy_loss = -masked_mean(ppo_clip_objective(ratio, advantages, config.eps), mask)
            value_loss = ppo_value_loss(values, rollout.values[index], rollout.returns[index], mask, config.value_clip)
            loss = policy_loss + config.vf_coef * value_loss
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                # The clip binds where the objective is flat: ratio above 1 + ε with A > 0, below 1 − ε with A < 0.
                clipped = ((advantages > 0) & (ratio > 1 + config.eps)) | ((advantages < 0) & (ratio < 1 - config.eps))
                step = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                        "entropy": masked_mean(entropy, mask).item(),
                        "clip_fraction": masked_mean(clipped.float(), mask).item(),
                        "approx_kl": masked_mean(0.5 * (logp - rollout.logprobs[index]) ** 2, mask).item()}
            for k, v in step.items():
                totals[k] = totals.get(k, 0.0) + v
            steps += 1
    return {k: v / steps for k, v in totals.items()}


def rollout_stats(rollout: Rollout, beta: float) -> dict:
    """Per-iteration numbers of the batch: mean score, sequence KL to the reference, objective, length."""
    seq_kl = ((rollout.logprobs - rollout.ref_logprobs) * rollout.mask).sum(-1)
    return {"proxy": float(rollout.scores.mean()), "kl": float(seq_kl.mean()),
            "objective": float((rollout.scores - beta * seq_kl).mean()),
            "answer_tokens": float(rollout.mask.sum(-1).float().mean()),
            "score_std": float(rollout.scores.std()) if len(rollout.scores) > 1 else math.nan}
