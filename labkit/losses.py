"""Loss functions as small pure functions on probabilities, logits and log-probs.

Each takes tensors (or floats where scalar), returns tensors, never mutates its inputs, and states
its equation: next-token cross-entropy, softmax temperature, Bradley–Terry, and the PPO, DPO and
GRPO objectives. The labs' explorers draw these same functions.
"""
from __future__ import annotations

import math

import torch


def nll(p_correct: float | torch.Tensor) -> float | torch.Tensor:
    """Cross-entropy with a one-hot target: L = −Σ y_i log p_i = −ln p(correct token), in nats.

    With p = 0.51 for "with" after "May the force be": L = −ln 0.51 ≈ 0.673.
    """
    if isinstance(p_correct, torch.Tensor):
        if (p_correct <= 0).any() or (p_correct > 1).any():
            raise ValueError("probabilities must lie in (0, 1]")
        return -torch.log(p_correct)
    if not 0 < p_correct <= 1:
        raise ValueError(f"a probability must lie in (0, 1], got {p_correct}")
    return -math.log(p_correct)


def next_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token loss (nats/token). logits: (batch, seq, vocab); targets: (batch, seq).

    Position t predicts token t+1 (teacher forcing: the true previous tokens are always the input,
    whatever the model guessed). Targets equal to ``ignore_index`` are skipped.
    """
    pred = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    gold = targets[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(pred, gold, ignore_index=ignore_index)


def nats_to_bits(nats: float) -> float:
    """1 nat = 1/ln 2 ≈ 1.4427 bits (logs in base e vs base 2)."""
    return nats / math.log(2)


def softmax_with_temperature(logits, temperature: float) -> list[float]:
    """p_i = exp(z_i / T) / Σ_j exp(z_j / T): T < 1 sharpens the distribution, T > 1 flattens it.

    ``logits`` is a sequence of floats; returns the probabilities as a list (T = 1: the softmax).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = [z / temperature for z in logits]
    top = max(scaled)
    weights = [math.exp(s - top) for s in scaled]
    total = sum(weights)
    return [w / total for w in weights]


def bradley_terry_probability(gap: float) -> float:
    """P(y_w ≻ y_l) = σ(Δ) for a reward gap Δ = r(x, y_w) − r(x, y_l) (Bradley–Terry)."""
    return 1.0 / (1.0 + math.exp(-gap))


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Reward-model loss: −mean log σ(r(x, y_w) − r(x, y_l)), as in TRL's RewardTrainer.

    Bradley–Terry says P(y_w ≻ y_l | x) = σ(r_w − r_l); minimising this fits r by maximum
    likelihood on preference pairs. Shapes: (batch,) each; returns a scalar.
    """
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()


def ppo_clip_objective(ratio: torch.Tensor, advantage: torch.Tensor, eps: float) -> torch.Tensor:
    """PPO's clipped surrogate, per element (to be *maximised*):

        min(r·A, clip(r, 1−ε, 1+ε)·A),  r = π_θ(a|s) / π_old(a|s)   (Schulman et al., 2017)

    With ε = 0.2, A = 2: r = 1.5 → min(3.0, 1.2·2 = 2.4) = 2.4; r = 2/3 → min(4/3, 0.8·2) = 4/3.
    """
    ratio = torch.as_tensor(ratio, dtype=torch.float32)
    advantage = torch.as_tensor(advantage, dtype=torch.float32)
    if not 0 <= eps < 1:
        raise ValueError(f"eps (the clip range ε) must lie in [0, 1), got {eps}")
    return torch.minimum(ratio * advantage, ratio.clamp(1 - eps, 1 + eps) * advantage)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float):
    """Direct Preference Optimisation (Rafailov et al., 2023), sigmoid form, per example:

        L = −log σ(β[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))])

    Inputs are sequence log-probs, shape (batch,). Returns ``(losses, chosen_rewards,
    rejected_rewards)``, each (batch,), with implicit rewards β(log π_θ − log π_ref), as TRL's
    ``DPOTrainer`` computes them (its training loss is ``losses.mean()``).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen = beta * (pi_chosen - ref_chosen)
    rejected = beta * (pi_rejected - ref_rejected)
    losses = -torch.nn.functional.logsigmoid(chosen - rejected)
    return losses, chosen.detach(), rejected.detach()


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Group-relative advantages (GRPO, Shao et al., 2024), as TRL's GRPOTrainer computes them.

    ``rewards`` is flat, ``group_size`` consecutive entries per prompt. A = r − mean(group); with
    ``scale``, divided by the group's unbiased standard deviation + 1e-4.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + 1e-4)
    return advantages.reshape(-1)


def kl_estimate(log_ratio: torch.Tensor) -> float:
    """Monte-Carlo KL(π ‖ π_ref) from samples y ∼ π: the mean of log π(y) − log π_ref(y) (nats).

    ``log_ratio`` holds one sequence's Σ_t log π(y_t) − log π_ref(y_t) per sample, shape (samples,).
    Unbiased (the "k1" estimator); a single sample can be negative, the mean converges to KL ≥ 0.
    """
    log_ratio = torch.as_tensor(log_ratio, dtype=torch.float64)
    if log_ratio.numel() == 0:
        raise ValueError("kl_estimate needs at least one sample")
    return float(log_ratio.mean())


# ------------------------------------------------------------------------------------ PPO for language models

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true (answer tokens; padding excluded)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``values`` to mean 0 and standard deviation 1 over the masked entries (padding stays 0).

    PPO whitens the advantages of a batch, so the step size does not depend on the reward's scale.
    With ``shift_mean=False`` only the scale changes (the mean is added back).
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalty_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                       mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of the RLHF objective E[r] − β·KL(π ‖ π_ref), as PPO optimises it.

    Every answer token t pays −β·(log π(y_t) − log π_ref(y_t)); the last answer token also gets the
    sequence's score r(x, y). Summed over an answer this is r − β·log π(y|x)/π_ref(y|x), whose mean
    over samples y ∼ π is the objective. Shapes: ``scores`` (batch,); the others (batch, tokens),
    answers left-aligned, ``mask`` true on answer tokens. Returns ``(rewards, kl)``, both (batch,
    tokens): the per-token rewards and the per-token log-ratios.
    """
    if beta < 0:
        raise ValueError(f"beta (the KL coefficient) must be >= 0, got {beta}")
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -beta * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016) over each answer's tokens.

        δ_t = r_t + γ·V_{t+1} − V_t   (V after the last token is 0: the episode ends)
        A_t = δ_t + γλ·A_{t+1}          returns R_t = A_t + V_t (the value head's targets)

    λ = 1 gives the Monte-Carlo return minus V_t (unbiased, noisy); λ = 0 the one-step TD error
    (low variance, leans on the value head). Shapes (batch, tokens), answers left-aligned, ``mask``
    true on answer tokens. Returns ``(advantages, returns)``, zero on padding.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float) -> torch.Tensor:
    """The value head's clipped squared error, ½·max((V − R)², (V_clip − R)²), V_clip within ±clip of the old V."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


# ------------------------------------------------------------------------------------ DPO's derivation

def tilted_policy(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """The optimum of E[r] − β·KL(π ‖ π_ref) over a finite set of answers:

        π*(y) = π_ref(y)·exp(r(y)/β) / Z,   Z = Σ_y π_ref(y)·exp(r(y)/β)

    Large β keeps π* near π_ref; small β piles it onto the best answer. Shapes (answers,).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    ref_probs = torch.as_tensor(ref_probs, dtype=torch.float64)
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)


def log_partition(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """log Z = log Σ_y π_ref(y)·exp(r(y)/β), the normaliser of :func:`tilted_policy`."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    ref_probs = torch.as_tensor(ref_probs, dtype=torch.float64)
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    return float(torch.logsumexp(torch.log(ref_probs) + rewards / beta, dim=-1))


def implicit_reward(policy_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """r̂(y) = β·(log π(y) − log π_ref(y)): the reward a policy implies, up to the prompt's β·log Z.

    Inverting :func:`tilted_policy` gives r(y) = β·log π*(y)/π_ref(y) + β·log Z; the β·log Z term is
    the same for every answer to a prompt, so it cancels in any difference r(y_w) − r(y_l), which is
    all Bradley–Terry sees.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    return beta * (torch.as_tensor(policy_logprobs) - torch.as_tensor(ref_logprobs))


def dpo_gradient_weight(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """σ(r̂_l − r̂_w): how hard DPO pushes a pair. The gradient of the DPO loss is

        −∇L = β·σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)),

    so a pair the implicit reward already ranks right (r̂_w ≫ r̂_l) barely moves the policy, and a
    pair it ranks wrongly gets a weight near 1.
    """
    return torch.sigmoid(torch.as_tensor(rejected_rewards) - torch.as_tensor(chosen_rewards))


def _positive_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")


def tilted_expected_reward(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """E_π*[r] = Σ_y π*(y)·r(y): the mean reward of the tilted optimum :func:`tilted_policy`.

    It falls from max r (β → 0: all mass on the best answer) to E_π_ref[r] (β → ∞: π* = π_ref).
    """
    _positive_beta(beta)
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    return float((tilted_policy(ref_probs, rewards, beta) * rewards).sum())


def tilted_kl(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> float:
    """KL(π* ‖ π_ref) = Σ_y π*(y)·log(π*(y)/π_ref(y)), in nats, exact over a finite set of answers.

    π* is :func:`tilted_policy`. Since log(π*/π_ref) = r/β − log Z, the KL also equals
    E_π*[r]/β − log Z. It is 0 when β → ∞ (π* = π_ref) and −log π_ref(best answer) when β → 0 (all
    mass on the best answer, a unique one): how far the optimum may move is what β prices.
    """
    _positive_beta(beta)
    ref_probs = torch.as_tensor(ref_probs, dtype=torch.float64)
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    log_star = torch.log_softmax(torch.log(ref_probs) + rewards / beta, dim=-1)
    star = log_star.exp()
    terms = torch.where(star > 0, star * (log_star - torch.log(ref_probs)), torch.zeros_like(star))
    return float(terms.sum().clamp(min=0.0))  # ≥ 0 always; the clamp only removes −1e-17 round-off


def dpo_gradient_check(ref_probs: torch.Tensor, chosen: int, rejected: int, beta: float, seed: int = 0,
                       drift: float = 1.0) -> dict[str, torch.Tensor]:
    """The DPO gradient three ways, and the lecture slide's as written, for a policy over a few answers.

    The policy is a softmax over one logit per answer, θ = log π_ref + drift·ε with ε ∼ N(0, 1)
    (``seed``): a policy that has moved away from the reference at random. For the preference pair
    (y_w, y_l) = (``chosen``, ``rejected``), indices into the answers, the loss is :func:`dpo_loss`,

        L = −log σ(u),   u = r̂_w − r̂_l,   r̂ = β·(log π_θ − log π_ref),

    so dL/du = −σ(−u) (d log σ(u)/du = σ(−u)) and ∇r̂ = β·∇log π_θ. Its gradient with respect to θ
    is computed

    * by autograd (``autograd``);
    * by the formula ∇L = −β·σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)), with ∇_θ log π(y) = e_y − π_θ
      for a softmax (``formula``);
    * by central finite differences of L, step 1e-6 (``finite_difference``);
    * as the lecture's slide writes it, ∇L = −σ(r_φ(y_l) − r_φ(y_w))·(∇log π(y_w) − ∇log π(y_l))
      (``slide``): the right weight σ(−u), but ∇r_φ taken as ∇log π where r_φ = β·log π/π_ref has
      ∇r_φ = β·∇log π. It is the true gradient times 1/β, exactly.

    For a softmax over the answers, ∇log π(y_w) − ∇log π(y_l) = e_w − e_l: the π_θ terms cancel, so
    only the pair's two logits move, by ±β·σ(−u) (the slide as written: ±σ(−u)).

    Returns float64 tensors: ``logits``, ``policy`` (π_θ), ``margin`` (u), ``weight`` (σ(−u)),
    ``loss``, and the four gradients, each of shape (answers,).
    """
    _positive_beta(beta)
    ref_probs = torch.as_tensor(ref_probs, dtype=torch.float64)
    n = ref_probs.numel()
    if not (0 <= chosen < n and 0 <= rejected < n) or chosen == rejected:
        raise ValueError(f"chosen and rejected must be two different answer indices in 0..{n - 1}, "
                         f"got {chosen} and {rejected}")
    noise = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logits = torch.log(ref_probs) + drift * noise

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(theta, dim=-1)
        ref = torch.log(ref_probs)
        losses, _, _ = dpo_loss(logp[chosen:chosen + 1], logp[rejected:rejected + 1],
                                ref[chosen:chosen + 1], ref[rejected:rejected + 1], beta)
        return losses.sum()

    theta = logits.clone().requires_grad_(True)
    loss = loss_of(theta)
    (autograd,) = torch.autograd.grad(loss, theta)

    policy = torch.softmax(logits, dim=-1)
    r_hat = implicit_reward(torch.log(policy), torch.log(ref_probs), beta)
    margin = r_hat[chosen] - r_hat[rejected]
    weight = dpo_gradient_weight(r_hat[chosen], r_hat[rejected])      # σ(r̂_l − r̂_w) = σ(−u)
    eye = torch.eye(n, dtype=torch.float64)
    direction = (eye[chosen] - policy) - (eye[rejected] - policy)      # ∇log π(y_w) − ∇log π(y_l)

    step = 1e-6
    finite = torch.stack([(loss_of(logits + step * eye[i]) - loss_of(logits - step * eye[i])) / (2 * step)
                          for i in range(n)])
    return {"logits": logits, "policy": policy, "margin": margin, "weight": weight,
            "loss": loss.detach(), "autograd": autograd, "formula": -beta * weight * direction + 0.0,
            "finite_difference": finite.detach(), "slide": -weight * direction + 0.0}  # + 0.0: no −0.0
