"""Loss functions as small pure functions on probabilities, logits and log-probs.

Each takes tensors (or floats where scalar), returns tensors, never mutates its inputs, and states
its equation. Later labs add the Bradley–Terry, PPO, DPO and GRPO objectives here.
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
