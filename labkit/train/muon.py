"""Muon: momentum whose step for each weight matrix is made orthogonal (Jordan et al., 2024).

For a matrix W, Muon keeps SGD's Nesterov momentum M of the gradient, then steps along the
orthogonal matrix nearest to M (U·Vᵀ, from M = U·S·Vᵀ): every direction the momentum points in moves
by the same amount, so the rare directions that plain momentum barely moves get their share. Five
steps of a Newton–Schulz iteration approximate U·Vᵀ with matrix products only. Embeddings, the
output head and the norms stay with AdamW (:func:`labkit.train.pretrain.make_optimizers`).

``torch.optim.Muon`` does exactly this, one matrix at a time in bfloat16: fast on a GPU, but on a
CPU without bfloat16 units each 384×128 product crawls (0.12 s per matrix on the course's machine,
several times a whole step's training). This one runs the same arithmetic in float32 on a CPU, and
orthogonalises all matrices of one shape in one batched product. Its rule is torch's, step for step
(momentum 0.95, Nesterov, the same Newton–Schulz coefficients, ``match_rms_adamw``'s step size
0.2·√max(rows, cols)·lr, which makes an update as large as AdamW's typically is) and its decoupled weight
decay (W ← (1 − lr·wd)·W before each step; torch's default wd is 0.1, this one's 0 unless asked).
"""
from __future__ import annotations

from collections import defaultdict

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's (and Keller Jordan's) quintic iteration


def orthogonalise(updates: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U·Vᵀ for each matrix of ``updates`` (shape ``(k, rows, cols)``), by ``steps``
    Newton–Schulz iterations on the matrices scaled to spectral norm at most 1 (their Frobenius norm)."""
    a, b, c = NS_COEFFICIENTS
    dtype = torch.bfloat16 if updates.is_cuda else torch.float32
    x = updates.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.transpose(-2, -1)
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.transpose(-2, -1)
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.transpose(-2, -1)
    return x.to(updates.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weights (see the module's text): ``lr`` is the peak rate before the per-matrix
    scale 0.2·√max(rows, cols); the schedule sets ``group["lr"]`` as for any optimiser."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 weight_decay: float = 0.0):
        if weight_decay < 0:
            raise ValueError(f"Muon's weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                                  "weight_decay": weight_decay})
        for group in self.param_groups:
            for param in group["params"]:
                if param.ndim != 2:
                    raise ValueError(f"Muon updates weight matrices only; got a parameter of shape "
                                     f"{tuple(param.shape)} (give it to AdamW)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            momentum = group["momentum"]
            by_shape: dict[tuple, list] = defaultdict(list)
            for param in group["params"]:
                if param.grad is None:
                    continue
                buf = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
                buf.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buf, momentum) if group["nesterov"] else buf
                by_shape[tuple(param.shape)].append((param, update))
            for (rows, cols), pairs in by_shape.items():
                ortho = orthogonalise(torch.stack([u for _, u in pairs]), group["ns_steps"])
                scale = group["lr"] * 0.2 * max(rows, cols) ** 0.5
                for (param, _), step in zip(pairs, ortho):
                    if group["weight_decay"]:  # decoupled, as torch's: W <- (1 - lr·wd)·W before the step
                        param.mul_(1 - group["lr"] * group["weight_decay"])
                    param.add_(step, alpha=-scale)
        return loss


class Joined(torch.optim.Optimizer):
    """Several optimisers stepped as one, for a trainer that takes a single optimiser (transformers'
    ``Trainer``, and so TRL's): its ``param_groups`` are theirs, the very same dicts, so the trainer's
    learning-rate schedule scales every group's peak rate alike, as :func:`labkit.train.pretrain.lr_at`
    does for pretraining's pair. Each keeps its own state; ``zero_grad`` clears every parameter."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        if not optimizers:
            raise ValueError("Joined needs at least one optimiser")
        super().__init__([p for opt in optimizers for group in opt.param_groups for p in group["params"]], {})
        self.optimizers = optimizers
        self.param_groups = [group for opt in optimizers for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for opt in self.optimizers:
            opt.step()
        return loss


def muon_matrices(model) -> tuple[list, list]:
    """``(matrices, rest)``: the transformer blocks' weight matrices (what Muon updates) and every other
    trainable parameter (embedding, tied head, norms: AdamW's). Muon orthogonalises each matrix's
    update, which suits a linear map between hidden states; an embedding's rows are a lookup table."""
    matrices, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_block_matrix = param.ndim == 2 and ".layers." in f".{name}" and "embed" not in name
        (matrices if is_block_matrix else rest).append(param)
    return matrices, rest
